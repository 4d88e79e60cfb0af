//! Keys, values, operation mixes and a small deterministic random generator.

use std::time::Duration;

use bytes::Bytes;

/// xorshift64*: fast, deterministic per seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Get,
    Set,
    Mix(f64),
}

impl Op {
    pub fn parse_list(text: &str, get_ratio: f64) -> Result<Vec<Op>, String> {
        if !(0.0..=1.0).contains(&get_ratio) {
            return Err(format!(
                "--get-ratio must be between 0 and 1, not {get_ratio}"
            ));
        }
        text.split(',')
            .map(|op| match op.trim() {
                "get" => Ok(Op::Get),
                "set" => Ok(Op::Set),
                "mix" => Ok(Op::Mix(get_ratio)),
                other => Err(format!("unknown --op `{other}`: use get, set or mix")),
            })
            .collect()
    }

    pub fn name(&self) -> String {
        match self {
            Op::Get => "get".into(),
            Op::Set => "set".into(),
            Op::Mix(ratio) => format!("mix({:.0}% get)", ratio * 100.0),
        }
    }

    /// The concrete operation for one request.
    pub fn pick(&self, rng: &mut Rng) -> Op {
        match *self {
            Op::Mix(ratio) => {
                if rng.unit() < ratio {
                    Op::Get
                } else {
                    Op::Set
                }
            }
            op => op,
        }
    }
}

pub struct Workload {
    pub keys: Vec<Bytes>,
    pub value: Bytes,
}

impl Workload {
    pub fn new(keys: usize, key_size: usize, value_size: usize) -> Result<Workload, String> {
        if keys == 0 || keys > 100_000_000 {
            return Err("--keys must be between 1 and 100000000".into());
        }
        let digits = keys.to_string().len() + 2;
        if key_size < digits || key_size > 64 * 1024 {
            return Err(format!(
                "--key-size must be between {digits} and 65536 for {keys} keys"
            ));
        }
        if value_size > 16 << 20 {
            return Err("--value-size is at most 16 MiB".into());
        }
        // All keys live in one buffer and each key is a slice of it, as keys decoded from a
        // received network or ring buffer are: taking one touches only the buffer's counter.
        let mut arena = Vec::with_capacity(keys * key_size);
        for i in 0..keys {
            let start = arena.len();
            arena.extend_from_slice(format!("k:{i}").as_bytes());
            arena.resize(start + key_size, b'.');
        }
        let arena = Bytes::from(arena);
        let keys = (0..keys)
            .map(|i| arena.slice(i * key_size..(i + 1) * key_size))
            .collect();
        Ok(Workload {
            keys,
            value: Bytes::from(vec![b'v'; value_size]),
        })
    }
}

/// Parses `5s`, `500ms`, `2m`, `100us`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len()),
    );
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration `{text}` (use e.g. 5s, 500ms)"))?;
    let seconds = match unit {
        "s" | "" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" => value * 60.0,
        _ => {
            return Err(format!(
                "bad duration unit in `{text}` (use s, ms, us or m)"
            ))
        }
    };
    if !(0.0..=86_400.0).contains(&seconds) {
        return Err(format!("duration `{text}` out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn rng_is_uniform_enough_and_deterministic() {
        let mut a = Rng::new(1);
        let mut b = Rng::new(1);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            counts[x] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn keys_have_the_requested_size() {
        let workload = Workload::new(1000, 16, 64).unwrap();
        assert!(workload.keys.iter().all(|k| k.len() == 16));
        assert_eq!(workload.value.len(), 64);
        let unique: std::collections::HashSet<_> = workload.keys.iter().collect();
        assert_eq!(unique.len(), 1000);
    }
}
