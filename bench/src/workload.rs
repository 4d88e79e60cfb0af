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

/// Value sizes: one size, or uniformly random in an inclusive range (`16..1024`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValueSize {
    Fixed(usize),
    Uniform { min: usize, max: usize },
}

impl ValueSize {
    /// Parses `64` or `16..1024` (both ends included; `16..=1024` too).
    pub fn parse(text: &str) -> Result<ValueSize, String> {
        let text = text.trim();
        let number = |part: &str| {
            part.trim()
                .parse::<usize>()
                .map_err(|_| format!("bad --value-size `{text}`: use e.g. 64 or 16..1024"))
        };
        let size = match text.split_once("..") {
            None => ValueSize::Fixed(number(text)?),
            Some((min, max)) => {
                let (min, max) = (number(min)?, number(max.trim_start_matches('='))?);
                if min > max {
                    return Err(format!("bad --value-size `{text}`: the range is empty"));
                }
                if min == max {
                    ValueSize::Fixed(min)
                } else {
                    ValueSize::Uniform { min, max }
                }
            }
        };
        if size.max() > 16 << 20 {
            return Err("--value-size is at most 16 MiB".into());
        }
        Ok(size)
    }

    pub fn min(&self) -> usize {
        match *self {
            ValueSize::Fixed(n) => n,
            ValueSize::Uniform { min, .. } => min,
        }
    }

    pub fn max(&self) -> usize {
        match *self {
            ValueSize::Fixed(n) => n,
            ValueSize::Uniform { max, .. } => max,
        }
    }

    pub fn contains(&self, size: usize) -> bool {
        (self.min()..=self.max()).contains(&size)
    }

    /// The mean size (for memory budgets).
    pub fn mean(&self) -> usize {
        (self.min() + self.max()) / 2
    }

    /// The size of one value.
    pub fn pick(&self, rng: &mut Rng) -> usize {
        match *self {
            ValueSize::Fixed(n) => n,
            ValueSize::Uniform { min, max } => min + rng.below(max - min + 1),
        }
    }
}

/// Which keys requests go to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distribution {
    Uniform,
    /// Zipf with this exponent (theta): the key of rank k has weight 1 / k^theta.
    Zipf(f64),
}

impl Distribution {
    /// `uniform`, or `zipf` with `theta` (0 < theta <= 10; YCSB's usual skew is 0.99).
    pub fn parse(name: &str, theta: f64) -> Result<Distribution, String> {
        match name.trim() {
            "uniform" => Ok(Distribution::Uniform),
            "zipf" | "zipfian" => {
                if !(theta > 0.0 && theta <= 10.0) {
                    return Err(format!(
                        "--zipf-theta must be above 0 and at most 10, not {theta}"
                    ));
                }
                Ok(Distribution::Zipf(theta))
            }
            other => Err(format!(
                "unknown --distribution `{other}`: use uniform or zipf"
            )),
        }
    }

    /// A sampler of indices in `0..n` (n > 0) under this distribution.
    pub fn sampler(&self, n: usize) -> KeySampler {
        match *self {
            Distribution::Uniform => KeySampler::Uniform(n),
            Distribution::Zipf(theta) => KeySampler::Zipf(Zipf::new(n as u64, theta)),
        }
    }
}

/// Draws key indices in `0..n`.
#[derive(Clone, Debug)]
pub enum KeySampler {
    Uniform(usize),
    Zipf(Zipf),
}

impl KeySampler {
    pub fn sample(&self, rng: &mut Rng) -> usize {
        match self {
            KeySampler::Uniform(n) => rng.below(*n),
            // Rank 1 (the most frequent) is index 0.
            KeySampler::Zipf(zipf) => (zipf.sample(rng) - 1) as usize,
        }
    }
}

/// Zipf's distribution over the ranks `1..=n`, P(k) proportional to 1 / k^theta, sampled by
/// rejection-inversion (W. Hörmann and G. Derflinger, "Rejection-inversion to generate variates
/// from monotone discrete distributions", 1996; the algorithm of Apache Commons' Zipf sampler):
/// exact for every theta > 0, O(1) to set up for any n, about one uniform number per sample.
#[derive(Clone, Debug)]
pub struct Zipf {
    n: u64,
    theta: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    s: f64,
}

impl Zipf {
    /// `n` >= 1 ranks, exponent `theta` > 0.
    pub fn new(n: u64, theta: f64) -> Zipf {
        assert!(n >= 1 && theta > 0.0, "Zipf needs n >= 1 and theta > 0");
        let mut zipf = Zipf {
            n,
            theta,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            s: 0.0,
        };
        zipf.h_integral_x1 = zipf.h_integral(1.5) - 1.0;
        zipf.h_integral_n = zipf.h_integral(n as f64 + 0.5);
        zipf.s = 2.0 - zipf.h_integral_inverse(zipf.h_integral(2.5) - zipf.h(2.0));
        zipf
    }

    /// A rank in `1..=n`.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        loop {
            let u = self.h_integral_n + rng.unit() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n as f64);
            if k - x <= self.s || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }

    /// The exact probability of rank `k` (sums over all n ranks: for tests and small n).
    #[cfg(test)]
    pub fn probability(&self, k: u64) -> f64 {
        let norm: f64 = (1..=self.n).map(|i| (i as f64).powf(-self.theta)).sum();
        (k as f64).powf(-self.theta) / norm
    }

    /// h(x) = 1 / x^theta.
    fn h(&self, x: f64) -> f64 {
        (-self.theta * x.ln()).exp()
    }

    /// H(x) = (x^(1 - theta) - 1) / (1 - theta), or ln(x) at theta = 1: an antiderivative of h.
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.theta) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        // Rounding can take t below -1 in rare cases; H's inverse is defined from -1 on.
        let t = (x * (1.0 - self.theta)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// ln(1 + x) / x, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - x * 0.25))
    }
}

/// (e^x - 1) / x, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + x * 0.25))
    }
}

/// Most value bytes one preload request carries (MSET): large values go a few at a time.
pub const PRELOAD_CHUNK_BYTES: usize = 8 << 20;

pub struct Workload {
    pub keys: Vec<Bytes>,
    /// A value of the largest size; every value is a prefix of it.
    pub value: Bytes,
    pub value_size: ValueSize,
    pub distribution: Distribution,
    sampler: KeySampler,
}

impl Workload {
    /// Fixed-size values, uniformly random keys.
    #[allow(dead_code)] // for scenarios without --distribution or value ranges
    pub fn new(keys: usize, key_size: usize, value_size: usize) -> Result<Workload, String> {
        Workload::with(
            keys,
            key_size,
            ValueSize::Fixed(value_size),
            Distribution::Uniform,
        )
    }

    pub fn with(
        keys: usize,
        key_size: usize,
        value_size: ValueSize,
        distribution: Distribution,
    ) -> Result<Workload, String> {
        if keys == 0 || keys > 100_000_000 {
            return Err("--keys must be between 1 and 100000000".into());
        }
        let digits = keys.to_string().len() + 2;
        if key_size < digits || key_size > 64 * 1024 {
            return Err(format!(
                "--key-size must be between {digits} and 65536 for {keys} keys"
            ));
        }
        if value_size.max() > 16 << 20 {
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
        let keys: Vec<Bytes> = (0..keys)
            .map(|i| arena.slice(i * key_size..(i + 1) * key_size))
            .collect();
        Ok(Workload {
            sampler: distribution.sampler(keys.len()),
            keys,
            value: Bytes::from(vec![b'v'; value_size.max()]),
            value_size,
            distribution,
        })
    }

    /// The index of the key of the next request, under the workload's distribution.
    pub fn key_index(&self, rng: &mut Rng) -> usize {
        self.sampler.sample(rng)
    }

    /// The key of the next request, under the workload's distribution.
    pub fn key(&self, rng: &mut Rng) -> Bytes {
        self.keys[self.key_index(rng)].clone()
    }

    /// As [`key`](Self::key), borrowed (no reference count to touch).
    pub fn key_ref(&self, rng: &mut Rng) -> &[u8] {
        &self.keys[self.key_index(rng)]
    }

    /// The value of the next SET (a prefix of `value`, so no copy).
    pub fn value(&self, rng: &mut Rng) -> Bytes {
        match self.value_size {
            ValueSize::Fixed(_) => self.value.clone(),
            size => self.value.slice(..size.pick(rng)),
        }
    }

    /// The value preloaded under key `index` (its size depends on the index alone).
    pub fn preload_value(&self, index: usize) -> Bytes {
        match self.value_size {
            ValueSize::Fixed(_) => self.value.clone(),
            size => self
                .value
                .slice(..size.pick(&mut Rng::new(index as u64 + 1))),
        }
    }

    /// The (key, value) pairs to preload, `chunk` keys at a time (one MSET each).
    pub fn preload_chunks(&self, chunk: usize) -> impl Iterator<Item = Vec<(Bytes, Bytes)>> + '_ {
        let chunk = self.preload_keys_per_chunk(chunk);
        (0..self.keys.len()).step_by(chunk).map(move |start| {
            (start..(start + chunk).min(self.keys.len()))
                .map(|i| (self.keys[i].clone(), self.preload_value(i)))
                .collect()
        })
    }

    /// Keys per preload request: `chunk`, fewer for large values (a request carries at most
    /// [`PRELOAD_CHUNK_BYTES`] of values, and always one).
    pub fn preload_keys_per_chunk(&self, chunk: usize) -> usize {
        chunk
            .min(PRELOAD_CHUNK_BYTES / self.value_size.max().max(1))
            .max(1)
    }

    /// Bytes the keys and values take (for memory budgets).
    pub fn data_bytes(&self) -> u64 {
        let key_size = self.keys.first().map_or(0, |key| key.len());
        (self.keys.len() * (key_size + self.value_size.mean())) as u64
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

    #[test]
    fn value_sizes_parse_and_stay_in_range() {
        assert_eq!(ValueSize::parse("64").unwrap(), ValueSize::Fixed(64));
        assert_eq!(
            ValueSize::parse("16..1024").unwrap(),
            ValueSize::Uniform { min: 16, max: 1024 }
        );
        assert_eq!(
            ValueSize::parse("16..=1024").unwrap(),
            ValueSize::Uniform { min: 16, max: 1024 }
        );
        assert_eq!(ValueSize::parse("8..8").unwrap(), ValueSize::Fixed(8));
        assert!(ValueSize::parse("9..8").is_err());
        assert!(ValueSize::parse("x").is_err());
        assert!(ValueSize::parse("1..99999999999").is_err());
        let workload = Workload::with(
            100,
            8,
            ValueSize::parse("16..32").unwrap(),
            Distribution::Uniform,
        )
        .unwrap();
        let mut rng = Rng::new(3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let value = workload.value(&mut rng);
            assert!((16..=32).contains(&value.len()), "{}", value.len());
            seen.insert(value.len());
        }
        assert_eq!(seen.len(), 17, "every size of the range comes up");
        let chunks: Vec<_> = workload.preload_chunks(30).collect();
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            [30, 30, 30, 10]
        );
        assert!(chunks
            .iter()
            .flatten()
            .all(|(_, value)| (16..=32).contains(&value.len())));
        assert_eq!(chunks[0][5].1, workload.preload_value(5), "deterministic");
    }

    #[test]
    fn distributions_parse() {
        assert_eq!(
            Distribution::parse("uniform", 0.99).unwrap(),
            Distribution::Uniform
        );
        assert_eq!(
            Distribution::parse("zipf", 0.99).unwrap(),
            Distribution::Zipf(0.99)
        );
        assert!(Distribution::parse("zipf", 0.0).is_err());
        assert!(Distribution::parse("zipf", f64::NAN).is_err());
        assert!(Distribution::parse("pareto", 1.0).is_err());
    }

    /// Sampled frequencies against the exact probabilities: a chi-square test over every rank
    /// (far beyond 6 standard deviations of its expectation fails) and each of the 10 most
    /// frequent ranks within 5 standard deviations.
    fn check_zipf(n: u64, theta: f64, samples: u32) {
        let zipf = Zipf::new(n, theta);
        let mut rng = Rng::new(7);
        let mut counts = vec![0u32; n as usize + 1];
        for _ in 0..samples {
            let k = zipf.sample(&mut rng);
            assert!((1..=n).contains(&k), "rank {k} out of 1..={n}");
            counts[k as usize] += 1;
        }
        let norm: f64 = (1..=n).map(|k| (k as f64).powf(-theta)).sum();
        let mut chi_square = 0.0;
        for k in 1..=n {
            let p = (k as f64).powf(-theta) / norm;
            let expected = p * f64::from(samples);
            let observed = f64::from(counts[k as usize]);
            chi_square += (observed - expected).powi(2) / expected;
            if k <= 10 {
                let sigma = (expected * (1.0 - p)).sqrt();
                assert!(
                    (observed - expected).abs() <= 5.0 * sigma + 1e-9,
                    "n={n} theta={theta} rank {k}: observed {observed}, expected {expected}"
                );
            }
        }
        let freedom = (n - 1) as f64;
        assert!(
            chi_square <= freedom + 6.0 * (2.0 * freedom).sqrt() + 1e-9,
            "n={n} theta={theta}: chi-square {chi_square} over {freedom} degrees of freedom"
        );
    }

    #[test]
    fn zipf_matches_the_exact_probabilities() {
        check_zipf(100, 0.99, 500_000);
        check_zipf(1000, 0.5, 500_000);
        check_zipf(50, 1.0, 300_000);
        check_zipf(20, 2.0, 300_000);
        check_zipf(1, 0.99, 1000);
        let zipf = Zipf::new(10, 1.0);
        let total: f64 = (1..=10).map(|k| zipf.probability(k)).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }

    #[test]
    fn zipf_over_many_keys_is_skewed_and_in_range() {
        // 100 M ranks: set-up is O(1); rank 1 / rank 2 frequencies are 2^theta.
        let zipf = Zipf::new(100_000_000, 0.99);
        let mut rng = Rng::new(11);
        let (mut first, mut second, mut low) = (0u32, 0u32, 0u32);
        for _ in 0..400_000 {
            let k = zipf.sample(&mut rng);
            assert!((1..=100_000_000).contains(&k));
            match k {
                1 => first += 1,
                2 => second += 1,
                _ => {}
            }
            if k <= 1000 {
                low += 1;
            }
        }
        let ratio = f64::from(first) / f64::from(second);
        assert!((1.8..2.2).contains(&ratio), "rank 1 / rank 2 = {ratio}");
        // H(1000) / H(1e8) for theta 0.99 is about 0.39: the head of the key space dominates.
        let share = f64::from(low) / 400_000.0;
        assert!(
            (0.33..0.45).contains(&share),
            "share of the top 1000: {share}"
        );
    }

    #[test]
    fn workload_keys_follow_the_distribution() {
        let workload =
            Workload::with(1000, 8, ValueSize::Fixed(4), Distribution::Zipf(0.99)).unwrap();
        let mut rng = Rng::new(5);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[workload.key_index(&mut rng)] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[999]);
        assert_eq!(&workload.keys[0][..], b"k:0.....");
        let uniform = Workload::new(1000, 8, 4).unwrap();
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[uniform.key_index(&mut rng)] += 1;
        }
        assert!(counts.iter().all(|&c| (40..170).contains(&c)));
    }
}
