//! The shared-memory path of local clients: the position-independent layout of every shared
//! region ([`layout`]) and the frame codec of the rings ([`codec`]).
//!
//! Everything here is shared by the server and the client library and is a pure function of
//! its arguments: integers are little-endian and fixed width, positions are byte offsets, and
//! nothing holds a pointer or a process-local handle. The code only encodes into and decodes
//! from byte slices; the mapping, the atomics and the futexes belong to the transport.
//!
//! `docs/shm-layout.md` describes the same layout byte by byte.

pub mod codec;
pub mod layout;

// Relations between the layout's constants, checked at compile time.
const _: () = {
    use layout::*;
    assert!(instance::RESERVED_TAIL_OFFSET <= instance::FILE_BYTES);
    assert!(ring_segment::STATIC_END_OFFSET <= ring_segment::REQUEST_HEAD_OFFSET);
    assert!(ring_segment::DISCONNECT_REASON_OFFSET + 4 <= ring_segment::RESERVED_TAIL_OFFSET);
    assert!(ring_segment::RESERVED_TAIL_OFFSET <= ring_segment::HEADER_BYTES);
    assert!(ring_segment::HEADER_BYTES.is_multiple_of(PAGE_BYTES));
    assert!(data_segment::CORE_PARKED_OFFSET + 4 <= data_segment::CORE_CPU_OFFSET);
    assert!(data_segment::CORE_CPU_OFFSET + 4 <= data_segment::RESERVED_TAIL_OFFSET);
    assert!(
        data_segment::CORE_CPU_OFFSET / CACHE_LINE_BYTES
            == data_segment::CORE_PARKED_OFFSET / CACHE_LINE_BYTES
    );
    assert!(ring_segment::CLIENT_WAIT_OFFSET + 4 <= ring_segment::CLIENT_CPU_OFFSET);
    assert!(
        ring_segment::CLIENT_CPU_OFFSET / CACHE_LINE_BYTES
            == ring_segment::CLIENT_WAIT_OFFSET / CACHE_LINE_BYTES
    );
    assert!(data_segment::RESERVED_TAIL_OFFSET <= data_segment::HEADER_BYTES);
    assert!(data_segment::HEADER_BYTES.is_multiple_of(PAGE_BYTES));
    assert!(ring::MIN_RING_BYTES.is_power_of_two() && ring::MAX_RING_BYTES.is_power_of_two());
    assert!(ring::MIN_RING_BYTES as usize >= PAGE_BYTES);
    assert!(ring::MAX_FRAME_PAYLOAD < ring::WRAP_MARKER);
    assert!(arena::MIN_BLOCK_BYTES.is_power_of_two());
    assert!(arena::MIN_BLOCK_BYTES as usize > arena::BLOCK_HEADER_BYTES);
    assert!(arena::block_bytes(arena::MAX_SIZE_CLASS).is_some());
};

#[cfg(test)]
mod tests {
    use super::codec::*;
    use super::layout::*;
    use crate::{Request, Response};
    use bytes::Bytes;

    #[test]
    fn ring_segment_lines_are_distinct() {
        use ring_segment::*;
        let live = [
            REQUEST_HEAD_OFFSET,
            RESPONSE_HEAD_OFFSET,
            CLIENT_WAIT_OFFSET,
            CLIENT_EPOCH_PIN_OFFSET,
            SERVER_STATUS_OFFSET,
        ];
        let lines: std::collections::BTreeSet<usize> =
            live.iter().map(|o| o / CACHE_LINE_BYTES).collect();
        assert_eq!(lines.len(), live.len());
        assert!(live.iter().all(|o| o % CACHE_LINE_BYTES == 0));
        assert_eq!(
            CLIENT_HEARTBEAT_OFFSET / CACHE_LINE_BYTES,
            CLIENT_EPOCH_PIN_OFFSET / CACHE_LINE_BYTES
        );
        assert_eq!(
            CLIENT_EPOCH_PIN_NEWEST_OFFSET / CACHE_LINE_BYTES,
            CLIENT_EPOCH_PIN_OFFSET / CACHE_LINE_BYTES
        );
    }

    #[test]
    fn frame_space_rounds_to_a_line() {
        assert_eq!(ring::frame_space(0), 64);
        assert_eq!(ring::frame_space(1), 64);
        assert_eq!(ring::frame_space(56), 64);
        assert_eq!(ring::frame_space(57), 128);
        assert_eq!(ring::frame_space(120), 128);
        assert_eq!(ring::frame_space(121), 192);
    }

    #[test]
    fn truncated_request_reports_offset_and_id() {
        let bytes = encode_request_vec(
            7,
            &Request::Get {
                key: Bytes::from_static(b"abc"),
            },
        );
        let err = decode_request(&bytes[..bytes.len() - 1]).unwrap_err();
        assert_eq!(err.request_id, Some(7));
        assert_eq!(err.offset, 5);
        assert!(err.to_string().contains("key"), "{err}");
    }

    #[test]
    fn inline_value_borrows_the_payload() {
        let payload = encode_response_vec(
            1,
            &Response::Value {
                value: Bytes::from_static(b"hello"),
                version: 3,
            },
            all_inline,
        );
        let (id, frame) = decode_response(&payload).unwrap();
        assert_eq!(id, 1);
        match frame {
            ResponseFrame::Value {
                value: ValueRef::Inline(bytes),
                version: 3,
            } => {
                assert_eq!(bytes, b"hello");
                assert!(std::ptr::eq(
                    bytes.as_ptr(),
                    payload[payload.len() - 5..].as_ptr()
                ));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decode_request_bytes_slices_without_copy() {
        let payload = Bytes::from(encode_request_vec(
            2,
            &Request::Set {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"value"),
                options: Default::default(),
            },
        ));
        let (_, request) = decode_request_bytes(&payload).unwrap();
        let Request::Set { value, .. } = request else {
            panic!()
        };
        let end = payload.as_ptr() as usize + payload.len();
        assert_eq!(value.as_ptr() as usize + value.len(), end);
    }
}
