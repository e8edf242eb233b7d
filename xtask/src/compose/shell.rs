//! Splitting command strings into words, keeping where each word's bytes come from. Pure.
//!
//! Two dialects: [`Dialect::Compose`] is how Compose splits a string `command:` (quotes and
//! backslashes only, no operators), [`Dialect::Sh`] is enough of POSIX `sh` to find a
//! `redis-server` invocation in an `sh -c` script (operators, redirections and comments end it).

use std::ops::Range;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Compose,
    Sh,
}

/// One word: its value after quote removal, its raw byte range in the input, and for each value
/// byte boundary `i` (`0..=len`) the input offset it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    pub value: String,
    pub raw: Range<usize>,
    pub map: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tok {
    Word(Word),
    /// A control operator, redirection or newline: ends a simple command.
    Sep(String, Range<usize>),
}

fn is_op(c: u8) -> bool {
    matches!(c, b';' | b'&' | b'|' | b'(' | b')' | b'<' | b'>' | b'\n')
}

/// Split `s` into tokens. Errors name the byte offset of an unterminated quote or escape.
pub fn lex(s: &str, dialect: Dialect) -> Result<Vec<Tok>, (usize, String)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b' ' || c == b'\t' || c == b'\r' || (dialect == Dialect::Compose && c == b'\n') {
            i += 1;
            continue;
        }
        if dialect == Dialect::Sh {
            if c == b'#' {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            if is_op(c) {
                let start = i;
                i += 1;
                while i < b.len() && matches!(b[i], b'&' | b'|' | b'>' | b'<') && b[i] != b'\n' {
                    i += 1;
                }
                // `2>&1`: the fd digit word before it belongs to the redirection.
                if matches!(c, b'<' | b'>') {
                    if let Some(Tok::Word(w)) = out.last() {
                        if w.raw.end == start && w.value.bytes().all(|d| d.is_ascii_digit()) {
                            out.pop();
                        }
                    }
                }
                out.push(Tok::Sep(s[start..i].to_string(), start..i));
                continue;
            }
        }
        // A word.
        let start = i;
        let mut value: Vec<u8> = Vec::new();
        let mut map = Vec::new();
        while i < b.len() {
            let c = b[i];
            if c == b' ' || c == b'\t' || c == b'\r' || c == b'\n' {
                break;
            }
            if dialect == Dialect::Sh && is_op(c) {
                break;
            }
            // A Compose interpolation `${...}` is one unit: Compose replaces it before any
            // splitting (`${X:?set it}` is not two words). In a script, `$${...}` (the shell's
            // own `${...}` once Compose has unescaped it) is one unit too.
            let interp = if c == b'$' && b.get(i + 1) == Some(&b'{') && (i == 0 || b[i - 1] != b'$')
            {
                Some(i + 2)
            } else if dialect == Dialect::Sh
                && c == b'$'
                && b.get(i + 1) == Some(&b'$')
                && b.get(i + 2) == Some(&b'{')
            {
                Some(i + 3)
            } else {
                None
            };
            if let Some(open) = interp {
                if let Some(close) = s[open..].find('}') {
                    let end = open + close + 1;
                    value.extend_from_slice(&b[i..end]);
                    map.extend(i..end);
                    i = end;
                    continue;
                }
            }
            match c {
                b'\'' => {
                    let open = i;
                    i += 1;
                    while i < b.len() && b[i] != b'\'' {
                        value.push(b[i]);
                        map.push(i);
                        i += 1;
                    }
                    if i >= b.len() {
                        return Err((open, "unterminated single quote".into()));
                    }
                    i += 1;
                }
                b'"' => {
                    let open = i;
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        if b[i] == b'\\'
                            && i + 1 < b.len()
                            && matches!(b[i + 1], b'"' | b'\\' | b'$' | b'`' | b'\n')
                        {
                            if b[i + 1] != b'\n' {
                                value.push(b[i + 1]);
                                map.push(i);
                            }
                            i += 2;
                            continue;
                        }
                        value.push(b[i]);
                        map.push(i);
                        i += 1;
                    }
                    if i >= b.len() {
                        return Err((open, "unterminated double quote".into()));
                    }
                    i += 1;
                }
                b'\\' => {
                    if i + 1 >= b.len() {
                        return Err((i, "a backslash at the end of the command".into()));
                    }
                    let ch = s[i + 1..].chars().next().unwrap_or('\n');
                    if ch != '\n' {
                        let mut buf = [0u8; 4];
                        for byte in ch.encode_utf8(&mut buf).bytes() {
                            value.push(byte);
                            map.push(i);
                        }
                    }
                    i += 1 + ch.len_utf8();
                }
                _ => {
                    value.push(c);
                    map.push(i);
                    i += 1;
                }
            }
        }
        // Insertions at the end of the value go before a closing quote, if any.
        let end_map = match b.get(i.wrapping_sub(1)) {
            Some(b'\'') | Some(b'"') if i > start => i - 1,
            _ => i,
        };
        map.push(end_map);
        let value = String::from_utf8(value).map_err(|_| (start, "invalid UTF-8".to_string()))?;
        out.push(Tok::Word(Word {
            value,
            raw: start..i,
            map,
        }));
    }
    Ok(out)
}

/// Just the words' values (for reading, not editing).
pub fn words(s: &str, dialect: Dialect) -> Option<Vec<String>> {
    let toks = lex(s, dialect).ok()?;
    Some(
        toks.into_iter()
            .filter_map(|t| match t {
                Tok::Word(w) => Some(w.value),
                Tok::Sep(..) => None,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(s: &str, d: Dialect) -> Vec<String> {
        lex(s, d)
            .unwrap()
            .into_iter()
            .map(|t| match t {
                Tok::Word(w) => w.value,
                Tok::Sep(s, _) => format!("<{s}>"),
            })
            .collect()
    }

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            vals(
                "umask 077 && printf 'a \"%s\"\\n' \"$$P\" > /tmp/r.conf && exec redis-server /tmp/r.conf --appendonly yes 2>&1 # c",
                Dialect::Sh
            ),
            [
                "umask", "077", "<&&>", "printf", "a \"%s\"\\n", "$$P", "<>>", "/tmp/r.conf",
                "<&&>", "exec", "redis-server", "/tmp/r.conf", "--appendonly", "yes", "<>&>",
                "1"
            ]
        );
        assert_eq!(
            vals("redis-server --save '' a&&b", Dialect::Compose),
            ["redis-server", "--save", "", "a&&b"]
        );
    }

    #[test]
    fn an_interpolation_is_one_unit() {
        assert_eq!(
            vals("a --requirepass ${P:?set it} b", Dialect::Sh),
            ["a", "--requirepass", "${P:?set it}", "b"]
        );
        assert_eq!(
            vals("a $${P:-x y} b", Dialect::Sh),
            ["a", "$${P:-x y}", "b"]
        );
        assert_eq!(
            vals("redis-server --requirepass ${P:?set it}", Dialect::Compose),
            ["redis-server", "--requirepass", "${P:?set it}"]
        );
    }

    #[test]
    fn maps_point_into_the_source() {
        let s = "x 'no' \"a\\\"b\"";
        let toks = lex(s, Dialect::Sh).unwrap();
        let Tok::Word(w) = &toks[1] else { panic!() };
        assert_eq!(w.value, "no");
        assert_eq!(&s[w.map[0]..w.map[2]], "no");
        let Tok::Word(w) = &toks[2] else { panic!() };
        assert_eq!(w.value, "a\"b");
        assert_eq!(w.map[3], s.len() - 1);
        assert!(lex("a 'b", Dialect::Sh).is_err());
    }
}
