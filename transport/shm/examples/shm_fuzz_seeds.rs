//! Writes the seed corpus of the fuzz targets in `transport/shm/fuzz`: rings holding valid
//! frames (and a wrap marker) for `ring_consumer`, pushes against an honest head for
//! `ring_producer`. `cargo run -p veddb-shm --example shm_fuzz_seeds -- transport/shm/fuzz/corpus`.
//! The input format is the one `veddb_shm::fuzzing` reads.

use std::path::PathBuf;

use veddb_shm::{ByteRing, WRAP_MARKER};

fn frame(area: &mut [u8], at: usize, payload: &[u8]) -> usize {
    area[at..at + 4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    area[at + 8..at + 8 + payload.len()].copy_from_slice(payload);
    at + ByteRing::frame_bytes(payload.len())
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "transport/shm/fuzz/corpus".to_owned()),
    );
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let folder = dir.join(target);
        std::fs::create_dir_all(&folder).expect("create the corpus folder");
        std::fs::write(folder.join(name), bytes).expect("write a seed");
    };
    // Size selector 0 (4096 bytes), head 0, three frames, then the peer stores the tail.
    let size = 4096;
    let mut area = vec![0u8; size];
    let mut end = 0;
    for payload in [&b"hello"[..], &[7u8; 100][..], &b"a request payload"[..]] {
        end = frame(&mut area, end, payload);
    }
    let mut seed = vec![0u8];
    seed.extend_from_slice(&0u64.to_le_bytes());
    seed.extend_from_slice(&area);
    seed.push(1);
    seed.extend_from_slice(&(end as u64).to_le_bytes());
    write("ring_consumer", "three-frames", &seed);
    // A frame that wraps: head near the end, a wrap marker there, the frame at 0.
    let head = (size - 16) as u64;
    let mut area = vec![0u8; size];
    area[size - 16..size - 12].copy_from_slice(&WRAP_MARKER.to_le_bytes());
    let end = frame(&mut area, 0, &[9u8; 40]);
    let mut seed = vec![0u8];
    seed.extend_from_slice(&head.to_le_bytes());
    seed.extend_from_slice(&area);
    seed.push(1);
    seed.extend_from_slice(&(size as u64 + end as u64).to_le_bytes());
    write("ring_consumer", "wrap-marker", &seed);
    // The producer: size selector 0 (4096 bytes), the client's head stored as 0, then pushes
    // of growing payloads with the client moving its head forward in between.
    let mut seed = vec![0u8, 1];
    seed.extend_from_slice(&0u64.to_le_bytes());
    let mut head = 0u64;
    for length in [1u8, 30, 250, 2] {
        seed.push(length);
        head += ByteRing::frame_bytes(usize::from(length) * 7 % (size / 2 + 8)) as u64;
        seed.push(1);
        seed.extend_from_slice(&head.to_le_bytes());
    }
    write("ring_producer", "pushes-and-honest-head", &seed);
    println!("wrote 3 seeds under {}", dir.display());
}
