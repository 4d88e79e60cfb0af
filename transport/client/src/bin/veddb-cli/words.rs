//! Words in, bytes out: how keys and values are typed (backslash escapes on the command line,
//! the prompt's quoting, both as `redis-cli` does them) and how bytes are shown on a terminal.
//!
//! Escapes, the same everywhere they apply: `\xHH` (two hex digits: any byte), `\n`, `\r`,
//! `\t`, `\a`, `\b`, `\\`, `\"` and `\'`. Anything else after a backslash is an error, never
//! a guess.

use std::ffi::OsString;

/// One word of a command: what was typed, and how its bytes are to be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    /// The word as typed: the shell's argument, or the prompt's word after its quoting.
    raw: Vec<u8>,
    /// The same word for the operating system (a `--file` path), never escaped.
    os: OsString,
    /// Whether the word may be an option (`--ttl`): a quoted word at the prompt never is.
    option_like: bool,
    /// Whether the backslash escapes of `raw` are still to be applied when it is data (a key,
    /// a value): command-line words, unless `--literal`.
    escaped: bool,
}

impl Word {
    /// A command-line argument: escapes apply to it as data unless `literal`.
    pub fn argument(argument: OsString, literal: bool) -> Word {
        Word {
            raw: argument.clone().into_encoded_bytes(),
            os: argument,
            option_like: true,
            escaped: !literal,
        }
    }

    /// A word of the prompt, its quoting already applied.
    pub fn typed(bytes: Vec<u8>, quoted: bool) -> Word {
        Word {
            os: OsString::from(String::from_utf8_lossy(&bytes).into_owned()),
            raw: bytes,
            option_like: !quoted,
            escaped: false,
        }
    }

    /// The word as typed.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The word as a path.
    pub fn os(&self) -> &OsString {
        &self.os
    }

    /// The word as text (a command name, a number, an option), or why it is not.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.raw).ok()
    }

    /// The option this word names (`--ttl`, or `--ttl` of `--ttl=5`), if it may be one.
    pub fn option_name(&self) -> Option<&str> {
        if !self.option_like || !self.raw.starts_with(b"--") || self.raw.len() == 2 {
            return None;
        }
        let text = self.text()?;
        Some(text.split_once('=').map_or(text, |(name, _)| name))
    }

    /// The value glued to an option (`5` of `--ttl=5`).
    pub fn glued_value(&self) -> Option<Word> {
        let text = self.text()?;
        let (_, value) = text.split_once('=')?;
        Some(Word {
            raw: value.as_bytes().to_vec(),
            os: OsString::from(value),
            option_like: false,
            escaped: self.escaped,
        })
    }

    /// Whether the word is `--`, the end of the options.
    pub fn is_end_of_options(&self) -> bool {
        self.option_like && self.raw == b"--"
    }

    /// The bytes the word stands for as data (a key, a value, a topic, a message): its escapes
    /// applied where they are due.
    pub fn data(&self) -> Result<Vec<u8>, String> {
        if self.escaped {
            unescape(&self.raw).map_err(|error| {
                format!(
                    "{error} in {} (or give --literal to take arguments as they are)",
                    show(&self.raw)
                )
            })
        } else {
            Ok(self.raw.clone())
        }
    }
}

/// The byte of the escape that starts at `bytes[at]` (a backslash) and how many bytes it
/// takes.
fn escape_at(bytes: &[u8], at: usize) -> Result<(u8, usize), String> {
    debug_assert_eq!(bytes[at], b'\\');
    let Some(&kind) = bytes.get(at + 1) else {
        return Err("a lone \\ at the end (write \\\\ for a backslash)".into());
    };
    let byte = match kind {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'a' => 0x07,
        b'b' => 0x08,
        b'\\' | b'"' | b'\'' => kind,
        b'x' => {
            let digits = bytes.get(at + 2..at + 4).unwrap_or(&[]);
            let value = std::str::from_utf8(digits)
                .ok()
                .filter(|text| text.len() == 2)
                .and_then(|text| u8::from_str_radix(text, 16).ok());
            return match value {
                Some(byte) => Ok((byte, 4)),
                None => Err("\\x needs two hex digits (as in \\x00 or \\xff)".into()),
            };
        }
        other => {
            let shown = show(&[other]);
            return Err(format!(
                "unknown escape \\{} (escapes: \\xHH \\n \\r \\t \\a \\b \\\\ \\\" \\')",
                &shown[1..shown.len() - 1]
            ));
        }
    };
    Ok((byte, 2))
}

/// `raw` with its backslash escapes applied.
pub fn unescape(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut at = 0;
    while at < raw.len() {
        if raw[at] == b'\\' {
            let (byte, length) = escape_at(raw, at)?;
            out.push(byte);
            at += length;
        } else {
            out.push(raw[at]);
            at += 1;
        }
    }
    Ok(out)
}

fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Splits a line of the prompt into words, as `redis-cli` does: spaces separate words;
/// `"..."` holds spaces and the escapes; `'...'` holds everything as it is but `\'`; a closing
/// quote must end its word. Quoted words are never options.
pub fn split_line(line: &[u8]) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let mut at = 0;
    loop {
        while at < line.len() && is_space(line[at]) {
            at += 1;
        }
        if at == line.len() {
            return Ok(words);
        }
        let mut word = Vec::new();
        let mut quoted = false;
        while at < line.len() && !is_space(line[at]) {
            let quote = line[at];
            if quote != b'"' && quote != b'\'' {
                word.push(quote);
                at += 1;
                continue;
            }
            quoted = true;
            at += 1;
            loop {
                match line.get(at) {
                    None => {
                        return Err(format!(
                            "unbalanced quotes: a closing {} is missing",
                            quote as char
                        ))
                    }
                    Some(&byte) if byte == quote => {
                        at += 1;
                        break;
                    }
                    Some(b'\\') if quote == b'"' => {
                        let (byte, length) = escape_at(line, at)?;
                        word.push(byte);
                        at += length;
                    }
                    Some(b'\\') if line.get(at + 1) == Some(&b'\'') => {
                        word.push(b'\'');
                        at += 2;
                    }
                    Some(&byte) => {
                        word.push(byte);
                        at += 1;
                    }
                }
            }
            if at < line.len() && !is_space(line[at]) {
                return Err(format!(
                    "a closing {} must end its word (put a space after it)",
                    quote as char
                ));
            }
        }
        words.push(Word::typed(word, quoted));
    }
}

/// Characters that change how a terminal shows the text around them without showing
/// themselves (zero-width and bidirectional controls): escaped like control characters.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
    )
}

/// Bytes shown for a terminal, in double quotes, so that they can be typed back at the prompt
/// as they are: printable text as it is (UTF-8 included), `"` and `\` escaped, control and
/// invisible characters and bytes that are not UTF-8 as escapes (`\n`, `\xff`).
pub fn show(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                c if c.is_control() || is_invisible(c) => {
                    let mut buffer = [0; 4];
                    for byte in c.encode_utf8(&mut buffer).bytes() {
                        out.push_str(&format!("\\x{byte:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<Vec<u8>> {
        split_line(line.as_bytes())
            .unwrap()
            .into_iter()
            .map(|word| word.raw)
            .collect()
    }

    #[test]
    fn unescape_applies_every_escape_and_refuses_unknown_ones() {
        assert_eq!(
            unescape(br#"a\x00b\xFF\n\r\t\a\b\\\"\'"#).unwrap(),
            b"a\x00b\xff\n\r\t\x07\x08\\\"'"
        );
        assert_eq!(unescape(b"plain text").unwrap(), b"plain text");
        assert!(unescape(b"\\q").unwrap_err().contains("unknown escape \\q"));
        assert!(unescape(b"\\x4").unwrap_err().contains("two hex digits"));
        assert!(unescape(b"\\xzz").unwrap_err().contains("two hex digits"));
        assert!(unescape(b"end\\").unwrap_err().contains("lone \\"));
    }

    #[test]
    fn split_line_quotes_like_redis_cli() {
        assert_eq!(
            words("  set  a   b "),
            vec![b"set".to_vec(), b"a".into(), b"b".into()]
        );
        assert_eq!(
            words(r#"set "a b" "x\x00\xff\"y""#),
            vec![b"set".to_vec(), b"a b".into(), b"x\x00\xff\"y".into()]
        );
        // Single quotes keep backslashes, except \'.
        assert_eq!(words(r"'a\x00\'b'"), vec![br"a\x00'b".to_vec()]);
        // Unquoted words are taken as they are; a quote inside a word opens a quoted part.
        assert_eq!(words(r"a\x00b"), vec![br"a\x00b".to_vec()]);
        assert_eq!(words(r#"ab"c d""#), vec![b"abc d".to_vec()]);
        assert_eq!(words(r#""""#), vec![Vec::<u8>::new()]);
        assert_eq!(words("é"), vec!["é".as_bytes().to_vec()]);
        assert!(words("").is_empty());
    }

    #[test]
    fn split_line_reports_bad_quoting() {
        let error = |line: &str| split_line(line.as_bytes()).unwrap_err();
        assert!(error(r#"set "abc"#).contains("closing \" is missing"));
        assert!(error("set 'abc").contains("closing ' is missing"));
        assert!(error(r#""a"b"#).contains("must end its word"));
        assert!(error(r#""\q""#).contains("unknown escape \\q"));
    }

    #[test]
    fn quoted_words_are_never_options() {
        let split = split_line(br#"--ttl "--nx" '--xx' --file=a -- x"#).unwrap();
        assert_eq!(split[0].option_name(), Some("--ttl"));
        assert_eq!(split[1].option_name(), None);
        assert_eq!(split[2].option_name(), None);
        assert_eq!(split[3].option_name(), Some("--file"));
        assert_eq!(split[3].glued_value().unwrap().raw(), b"a");
        assert!(split[4].is_end_of_options());
        assert!(!split[5].is_end_of_options());
    }

    #[test]
    fn arguments_unescape_as_data_unless_literal() {
        let word = Word::argument(OsString::from(r"a\x00b"), false);
        assert_eq!(word.data().unwrap(), b"a\x00b");
        assert_eq!(word.raw(), br"a\x00b");
        let literal = Word::argument(OsString::from(r"a\x00b"), true);
        assert_eq!(literal.data().unwrap(), br"a\x00b");
        let bad = Word::argument(OsString::from(r"C:\dir"), false);
        let error = bad.data().unwrap_err();
        assert!(error.contains("unknown escape \\d"), "{error}");
        assert!(error.contains("--literal"), "{error}");
    }

    #[test]
    fn show_escapes_what_a_terminal_would_not_show_and_reads_back() {
        assert_eq!(show(b"hello"), r#""hello""#);
        assert_eq!(show(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            show(b"\x00\xff\n\r\t\x07\x08\x1b"),
            r#""\x00\xff\n\r\t\a\b\x1b""#
        );
        assert_eq!(show("héllo".as_bytes()), "\"héllo\"");
        // C1 controls and bidirectional overrides are escaped, byte by byte.
        assert_eq!(show("\u{85}".as_bytes()), r#""\xc2\x85""#);
        assert_eq!(show("\u{202E}".as_bytes()), r#""\xe2\x80\xae""#);
        // Every byte value round-trips through show and the prompt's quoting.
        let all: Vec<u8> = (0..=255u8).collect();
        let typed = split_line(show(&all).as_bytes()).unwrap();
        assert_eq!(typed.len(), 1);
        assert_eq!(typed[0].raw(), &all[..]);
        let utf8 = "naïve ✓ \u{202E} \u{85}".as_bytes();
        assert_eq!(split_line(show(utf8).as_bytes()).unwrap()[0].raw(), utf8);
    }
}
