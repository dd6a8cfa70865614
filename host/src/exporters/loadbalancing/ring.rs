//! The consistent-hash ring that maps routing keys to backends.
//!
//! Each backend sits at [`POINTS_PER_BACKEND`] points on a 64-bit circle, placed by hashing its
//! URL; a key belongs to the backend of the first point at or after the key's hash. Adding or
//! removing one of N backends therefore moves only the keys whose first point changes: about
//! 1/N of them, all to or from that backend.
//!
//! Every agent must map a key to the same backend without talking to the others, so the hash
//! is fixed here (FNV-1a with a SplitMix64 finish), not a per-process seeded one: it may never
//! change, or every key would move at once during an upgrade.

/// Points each backend has on the circle. More points even out the shares (their spread shrinks
/// with the square root of the count); 256 keeps each of three backends within a few percent
/// of a third.
pub const POINTS_PER_BACKEND: usize = 256;

/// A stable 64-bit hash of `parts`, in order.
pub fn hash(parts: &[&[u8]]) -> u64 {
    let mut state = Hasher::new();
    for part in parts {
        state.write(part);
    }
    state.finish()
}

/// The stable hash, fed piece by piece.
#[derive(Debug, Clone, Copy)]
pub struct Hasher(u64);

impl Hasher {
    /// A fresh hash.
    pub fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    /// Feeds `bytes`, followed by their length so that ("ab", "c") and ("a", "bc") differ.
    pub fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        for &byte in &(bytes.len() as u64).to_le_bytes() {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The hash so far. FNV alone leaves short inputs' high bits poorly mixed; SplitMix64's
    /// finish spreads them over the whole circle.
    pub fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

/// The ring over a set of backends, each named by its index in the list it was built from.
#[derive(Debug, Clone)]
pub struct Ring {
    /// (point, backend index), sorted by point.
    points: Vec<(u64, u32)>,
    backends: usize,
}

impl Ring {
    /// The ring for `backends` (their URLs); `None` when there are none.
    pub fn new<S: AsRef<str>>(backends: &[S]) -> Option<Self> {
        if backends.is_empty() {
            return None;
        }
        let mut points = Vec::with_capacity(backends.len() * POINTS_PER_BACKEND);
        for (index, backend) in backends.iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            for point in 0..POINTS_PER_BACKEND as u64 {
                points.push((hash(&[backend.as_ref().as_bytes(), &point.to_le_bytes()]), index));
            }
        }
        // Equal points (vanishingly rare) are ordered by backend, so every host agrees.
        points.sort_unstable();
        Some(Self { points, backends: backends.len() })
    }

    /// How many backends it holds.
    pub fn backends(&self) -> usize {
        self.backends
    }

    /// The backend owning the key hashed to `key`.
    pub fn owner(&self, key: u64) -> u32 {
        let at = self.points.partition_point(|&(point, _)| point < key);
        self.points.get(at).unwrap_or(&self.points[0]).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("http://10.0.0.{i}:4317")).collect()
    }

    /// The owners, as URLs, of 100,000 keys.
    fn owners(backends: &[String]) -> Vec<String> {
        let ring = Ring::new(backends).expect("backends");
        (0..100_000u64)
            .map(|key| backends[ring.owner(hash(&[&key.to_le_bytes()])) as usize].clone())
            .collect()
    }

    #[test]
    fn each_backend_gets_its_share() {
        for n in [2, 3, 5, 10] {
            let backends = urls(n);
            let owners = owners(&backends);
            for backend in &backends {
                let share = owners.iter().filter(|o| *o == backend).count() as f64 / owners.len() as f64;
                let expected = 1.0 / n as f64;
                assert!(
                    (share - expected).abs() < expected * 0.15,
                    "{backend} of {n} owns {share:.3} of the keys, expected {expected:.3} ± 15%"
                );
            }
        }
    }

    #[test]
    fn adding_a_backend_moves_about_one_in_n_plus_one_keys_all_to_it() {
        for n in [2, 4, 9] {
            let before = owners(&urls(n));
            let grown = urls(n + 1);
            let after = owners(&grown);
            let moved: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
            assert!(moved.iter().all(|(_, a)| **a == grown[n]), "keys only move to the new backend");
            let fraction = moved.len() as f64 / before.len() as f64;
            let expected = 1.0 / (n + 1) as f64;
            assert!(
                (fraction - expected).abs() < expected * 0.2,
                "{n} -> {}: {fraction:.3} of the keys moved, expected about {expected:.3}",
                n + 1
            );
        }
    }

    #[test]
    fn removing_a_backend_moves_only_its_keys() {
        for n in [3, 5, 10] {
            let all = urls(n);
            let before = owners(&all);
            let removed = &all[1];
            let rest: Vec<String> = all.iter().filter(|u| *u != removed).cloned().collect();
            let after = owners(&rest);
            let moved = before.iter().zip(&after).filter(|(b, a)| b != a);
            assert!(moved.clone().all(|(b, _)| b == removed), "only the removed backend's keys move");
            let fraction = moved.count() as f64 / before.len() as f64;
            let expected = 1.0 / n as f64;
            assert!(
                (fraction - expected).abs() < expected * 0.2,
                "{n} -> {}: {fraction:.3} of the keys moved, expected about {expected:.3}",
                n - 1
            );
        }
    }

    #[test]
    fn the_order_backends_are_listed_in_does_not_matter() {
        let forward = urls(4);
        let mut backward = forward.clone();
        backward.reverse();
        assert_eq!(owners(&forward), owners(&backward));
    }

    #[test]
    fn the_hash_never_changes() {
        // Agents of different versions must agree: a change here remaps every key in a fleet.
        assert_eq!(hash(&[b"sluice"]), 0xdd19_f2ff_c8e6_f5e6, "{:#x}", hash(&[b"sluice"]));
        assert_ne!(hash(&[b"ab", b"c"]), hash(&[b"a", b"bc"]));
    }
}
