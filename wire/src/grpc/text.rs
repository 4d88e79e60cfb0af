//! Header values: `grpc-message` percent-encoding and `grpc-timeout`.

use super::*;

// ---------------------------------------------------------------------------------------------
// Headers

/// Percent-encodes a status message for the `grpc-message` header (grpc/grpc
/// doc/PROTOCOL-HTTP2.md): the UTF-8 bytes outside `0x20..=0x7E`, and `%`, become `%XX`
/// (upper-case hex).
pub fn percent_encode_message(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if (0x20..=0x7E).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0F)]));
        }
    }
    out
}

/// Decodes a `grpc-message` header value: `%XX` becomes the byte, anything else (a malformed
/// escape included) is kept as it is, and the bytes are read as UTF-8 (invalid sequences
/// become U+FFFD), as the protocol asks of receivers.
pub fn percent_decode_message(value: &[u8]) -> String {
    fn hex(digit: u8) -> Option<u8> {
        char::from(digit)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let mut bytes = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' && i + 2 < value.len() {
            if let (Some(high), Some(low)) = (hex(value[i + 1]), hex(value[i + 2])) {
                bytes.push(high << 4 | low);
                i += 3;
                continue;
            }
        }
        bytes.push(value[i]);
        i += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Parses a `grpc-timeout` header: 1 to 8 ASCII digits and a unit, `H` hours, `M` minutes,
/// `S` seconds, `m` milliseconds, `u` microseconds or `n` nanoseconds. `None` when malformed.
pub fn grpc_timeout(value: &str) -> Option<Duration> {
    let (&unit, digits) = value.as_bytes().split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount = digits
        .iter()
        .fold(0_u64, |total, digit| total * 10 + u64::from(digit - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Formats a `grpc-timeout` header value for a duration: the finest unit whose amount fits
/// in 8 digits, rounded up so the deadline is never shorter than asked (saturating at
/// 99999999 hours).
pub fn grpc_timeout_value(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per_unit, unit) in units {
        let amount = nanos.div_ceil(per_unit);
        if amount <= MAX {
            return format!("{amount}{unit}");
        }
    }
    format!("{MAX}H")
}
