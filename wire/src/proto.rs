//! The protobuf messages of the gRPC API, generated at build time from `proto/veddb.proto`
//! and `proto/health.proto` (bytes fields are [`bytes::Bytes`]).

/// `package veddb.v1`: the VedDb service's messages.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/veddb.v1.rs"));
}

/// `package grpc.health.v1`: the standard gRPC health checking messages.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod health {
    include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn generated_types_use_bytes_and_round_trip() {
        let request = v1::SetRequest {
            key: bytes::Bytes::from_static(b"k"),
            value: bytes::Bytes::from_static(b"v"),
            ttl_ms: 5,
            condition: v1::SetCondition::IfPresent as i32,
            keep_ttl: true,
        };
        let decoded = v1::SetRequest::decode(request.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, request);
        assert_eq!(
            v1::SetCondition::IfAbsent.as_str_name(),
            "SET_CONDITION_IF_ABSENT"
        );
        assert_eq!(
            health::health_check_response::ServingStatus::ServiceUnknown as i32,
            3
        );
    }
}
