//! ggml tensor types and their dequantisation to f32.
//!
//! Block layouts follow ggml's `ggml-common.h` (all little-endian):
//!
//! | type | elements / block | bytes / block | layout |
//! | --- | --- | --- | --- |
//! | Q4_0 | 32 | 18 | f16 `d`, 16 bytes of nibbles: `x = (q - 8) d` |
//! | Q4_1 | 32 | 20 | f16 `d`, f16 `m`, 16 bytes of nibbles: `x = q d + m` |
//! | Q5_0 | 32 | 22 | f16 `d`, u32 high bits, 16 bytes of nibbles: `x = (q - 16) d` |
//! | Q5_1 | 32 | 24 | f16 `d`, f16 `m`, u32 high bits, nibbles: `x = q d + m` |
//! | Q8_0 | 32 | 34 | f16 `d`, 32 i8: `x = q d` |
//! | Q2_K | 256 | 84 | 16 bytes of 4-bit scale/min pairs, 64 bytes of 2-bit quants, f16 `d`, f16 `dmin` |
//! | Q3_K | 256 | 110 | 32 bytes of high bits, 64 bytes of 2-bit quants, 12 bytes of 6-bit scales, f16 `d` |
//! | Q4_K | 256 | 144 | f16 `d`, f16 `dmin`, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles |
//! | Q5_K | 256 | 176 | as Q4_K plus 32 bytes of fifth bits |
//! | Q6_K | 256 | 210 | 128 bytes low nibbles, 64 bytes high 2 bits, 16 i8 scales, f16 `d` |
//!
//! In Q4_0/Q4_1/Q5_x the low nibble of byte `j` is element `j` and the high nibble element
//! `j + 16`.

use half::{bf16, f16};

/// A ggml tensor type (`ggml_type`), with its block geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit float.
    F64,
    /// 8-bit integer.
    I8,
    /// 16-bit integer.
    I16,
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 4-bit, one f16 scale per 32.
    Q4_0,
    /// 4-bit, f16 scale and minimum per 32.
    Q4_1,
    /// 5-bit, one f16 scale per 32.
    Q5_0,
    /// 5-bit, f16 scale and minimum per 32.
    Q5_1,
    /// 8-bit, one f16 scale per 32.
    Q8_0,
    /// 8-bit with block sums (activation type).
    Q8_1,
    /// 2-bit K-quant.
    Q2K,
    /// 3-bit K-quant.
    Q3K,
    /// 4-bit K-quant (super-blocks of 256, 6-bit sub-block scales and minimums).
    Q4K,
    /// 5-bit K-quant.
    Q5K,
    /// 6-bit K-quant (super-blocks of 256, i8 sub-block scales).
    Q6K,
    /// 8-bit K-quant (activation type).
    Q8K,
    /// Another known ggml type (importance-matrix and ternary quants), by id.
    Other(u32),
}

/// The types [`dequantize`] supports, for error messages.
pub const SUPPORTED_TYPES: &str =
    "F32, F16, BF16, F64, I8, I16, I32, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

impl GgmlType {
    /// The type of a `ggml_type` id, or `None` for ids ggml does not define.
    pub fn from_id(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2K,
            11 => Q3K,
            12 => Q4K,
            13 => Q5K,
            14 => Q6K,
            15 => Q8K,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            30 => BF16,
            16..=23 | 29 | 34 | 35 | 39..=41 => Other(id),
            _ => return None,
        })
    }

    /// The `ggml_type` id.
    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2K => 10,
            Q3K => 11,
            Q4K => 12,
            Q5K => 13,
            Q6K => 14,
            Q8K => 15,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            BF16 => 30,
            Other(id) => id,
        }
    }

    /// ggml's name of the type (`Q4_K`, `IQ2_XXS`, ...).
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            BF16 => "BF16",
            F64 => "F64",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Q8K => "Q8_K",
            Other(16) => "IQ2_XXS",
            Other(17) => "IQ2_XS",
            Other(18) => "IQ3_XXS",
            Other(19) => "IQ1_S",
            Other(20) => "IQ4_NL",
            Other(21) => "IQ3_S",
            Other(22) => "IQ2_S",
            Other(23) => "IQ4_XS",
            Other(29) => "IQ1_M",
            Other(34) => "TQ1_0",
            Other(35) => "TQ2_0",
            Other(39) => "MXFP4",
            Other(40) => "NVFP4",
            Other(41) => "Q1_0",
            Other(_) => "unknown",
        }
    }

    /// `(elements per block, bytes per block)`.
    pub fn block(self) -> (usize, usize) {
        use GgmlType::*;
        match self {
            F32 => (1, 4),
            F16 | BF16 => (1, 2),
            F64 | I64 => (1, 8),
            I8 => (1, 1),
            I16 => (1, 2),
            I32 => (1, 4),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 40),
            Q2K => (256, 84),
            Q3K => (256, 110),
            Q4K => (256, 144),
            Q5K => (256, 176),
            Q6K => (256, 210),
            Q8K => (256, 292),
            Other(16) => (256, 66),
            Other(17) => (256, 74),
            Other(18) => (256, 98),
            Other(19) => (256, 50),
            Other(20) => (32, 18),
            Other(21) => (256, 110),
            Other(22) => (256, 82),
            Other(23) => (256, 136),
            Other(29) => (256, 56),
            Other(34) => (256, 54),
            Other(35) => (256, 66),
            Other(39) => (32, 17),
            Other(40) => (64, 36),
            Other(41) => (128, 18),
            // Never constructed: `from_id` only makes the ids above.
            Other(_) => (1, 1),
        }
    }

    /// Whether [`dequantize`] supports the type.
    pub fn is_supported(self) -> bool {
        use GgmlType::*;
        !matches!(self, I64 | Q8_1 | Q8K | Other(_))
    }

    /// Bytes that `n` elements take, or `None` when `n` is not a whole number of blocks.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        let (bs, ts) = self.block();
        n.is_multiple_of(bs).then(|| n / bs * ts)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.id())
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantises `bytes` holding a whole number of blocks of type `ty` to f32, or `None` when
/// the type is not supported (see [`GgmlType::is_supported`]) or `bytes` is not a whole
/// number of blocks.
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Option<Vec<f32>> {
    let (bs, ts) = ty.block();
    if !ty.is_supported() || !bytes.len().is_multiple_of(ts) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / ts * bs);
    let blocks = bytes.chunks_exact(ts);
    match ty {
        GgmlType::F32 => out.extend(blocks.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        GgmlType::F16 => out.extend(blocks.map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())),
        GgmlType::BF16 => out.extend(blocks.map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())),
        GgmlType::F64 => {
            out.extend(blocks.map(|c| {
                f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
            }))
        }
        GgmlType::I8 => out.extend(blocks.map(|c| c[0] as i8 as f32)),
        GgmlType::I16 => out.extend(blocks.map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)),
        GgmlType::I32 => {
            out.extend(blocks.map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32))
        }
        GgmlType::Q4_0 => blocks.for_each(|b| q4_0(b, &mut out)),
        GgmlType::Q4_1 => blocks.for_each(|b| q4_1(b, &mut out)),
        GgmlType::Q5_0 => blocks.for_each(|b| q5(b, false, &mut out)),
        GgmlType::Q5_1 => blocks.for_each(|b| q5(b, true, &mut out)),
        GgmlType::Q8_0 => blocks.for_each(|b| q8_0(b, &mut out)),
        GgmlType::Q2K => blocks.for_each(|b| q2_k(b, &mut out)),
        GgmlType::Q3K => blocks.for_each(|b| q3_k(b, &mut out)),
        GgmlType::Q4K => blocks.for_each(|b| q4_k(b, &mut out)),
        GgmlType::Q5K => blocks.for_each(|b| q5_k(b, &mut out)),
        GgmlType::Q6K => blocks.for_each(|b| q6_k(b, &mut out)),
        _ => return None,
    }
    Some(out)
}

fn q4_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    out.extend(qs.iter().map(|q| ((q & 0x0f) as i32 - 8) as f32 * d));
    out.extend(qs.iter().map(|q| ((q >> 4) as i32 - 8) as f32 * d));
}

fn q4_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qs = &b[4..20];
    out.extend(qs.iter().map(|q| (q & 0x0f) as f32 * d + m));
    out.extend(qs.iter().map(|q| (q >> 4) as f32 * d + m));
}

/// Q5_0 (`with_min = false`: `d, qh, qs`) and Q5_1 (`d, m, qh, qs`).
fn q5(b: &[u8], with_min: bool, out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    let (m, at) = match with_min {
        true => (f16_at(b, 2), 4),
        false => (0.0, 2),
    };
    let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let qs = &b[at + 4..at + 20];
    let value = |q: u32| match with_min {
        true => q as f32 * d + m,
        false => (q as i32 - 16) as f32 * d,
    };
    for (j, q) in qs.iter().enumerate() {
        let hi = (qh >> j) & 1;
        out.push(value((q & 0x0f) as u32 | (hi << 4)));
    }
    for (j, q) in qs.iter().enumerate() {
        let hi = (qh >> (j + 16)) & 1;
        out.push(value((q >> 4) as u32 | (hi << 4)));
    }
}

fn q8_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
}

fn q2_k(b: &[u8], out: &mut Vec<f32>) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let mut is = 0;
    for q in qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for half in [&q[..16], &q[16..]] {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * (sc & 0x0f) as f32, dmin * (sc >> 4) as f32);
                out.extend(half.iter().map(|x| dl * ((x >> shift) & 3) as f32 - ml));
            }
        }
    }
}

fn q3_k(b: &[u8], out: &mut Vec<f32>) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let s = &b[96..108];
    let d = f16_at(b, 108);
    // 16 6-bit scales: low 4 bits in bytes 0..8 (low nibbles, then high nibbles), high 2
    // bits in bytes 8..12.
    let scale = |j: usize| -> i32 {
        let low = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        (low | (high << 4)) as i32 - 32
    };
    let mut is = 0;
    let mut m = 1u8;
    for q in qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for (lo, hi) in [(0, 16), (16, 32)] {
                let dl = d * scale(is) as f32;
                is += 1;
                for l in lo..hi {
                    let v = ((q[l] >> shift) & 3) as i32 - if hmask[l] & m != 0 { 0 } else { 4 };
                    out.push(dl * v as f32);
                }
            }
            m = m.wrapping_shl(1);
        }
    }
}

/// The 6-bit scale and minimum of sub-block `j` (0..8) of a Q4_K/Q5_K super-block.
fn scale_min_k4(j: usize, s: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    };
    (sc as f32, m as f32)
}

fn q4_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (chunk, q) in qs.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        out.extend(q.iter().map(|q| d1 * (q & 0x0f) as f32 - m1));
        out.extend(q.iter().map(|q| d2 * (q >> 4) as f32 - m2));
    }
}

fn q5_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for (chunk, q) in qs.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        for (l, q) in q.iter().enumerate() {
            let hi = if qh[l] & u1 != 0 { 16 } else { 0 };
            out.push(d1 * ((q & 0x0f) + hi) as f32 - m1);
        }
        for (l, q) in q.iter().enumerate() {
            let hi = if qh[l] & u2 != 0 { 16 } else { 0 };
            out.push(d2 * ((q >> 4) + hi) as f32 - m2);
        }
    }
}

fn q6_k(b: &[u8], out: &mut Vec<f32>) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let sc = &b[192..208];
    let d = f16_at(b, 208);
    for half in 0..2 {
        let (ql, qh, sc) = (&ql[64 * half..], &qh[32 * half..], &sc[8 * half..]);
        let mut y = [0f32; 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let s = |k: usize| d * (sc[is + k] as i8) as f32;
            y[l] = s(0) * q1 as f32;
            y[l + 32] = s(2) * q2 as f32;
            y[l + 64] = s(4) * q3 as f32;
            y[l + 96] = s(6) * q4 as f32;
        }
        out.extend_from_slice(&y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_0_block_by_hand() {
        // d = 0.5; byte j holds low nibble j (element j) and high nibble 15 - j (element j+16).
        let mut b = h(0.5).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let x = dequantize(GgmlType::Q4_0, &b).unwrap();
        assert_eq!(x.len(), 32);
        assert_eq!(x[0], -4.0); // (0 - 8) * 0.5
        assert_eq!(x[15], 3.5); // (15 - 8) * 0.5
        assert_eq!(x[16], 3.5); // element 16 = high nibble of byte 0 = 15
        assert_eq!(x[31], -4.0);
    }

    #[test]
    fn q4_1_block_by_hand() {
        // d = 0.25, m = -1: x = q / 4 - 1.
        let mut b = h(0.25).to_vec();
        b.extend(h(-1.0));
        b.extend((0..16u8).map(|j| j | (3 << 4)));
        let x = dequantize(GgmlType::Q4_1, &b).unwrap();
        assert_eq!(&x[..4], &[-1.0, -0.75, -0.5, -0.25]);
        assert_eq!(x[15], 2.75);
        assert!(x[16..].iter().all(|&v| v == -0.25));
    }

    #[test]
    fn q8_0_block_by_hand() {
        let mut b = h(2.0).to_vec();
        b.extend((0..32i8).map(|j| (j - 16) as u8));
        let x = dequantize(GgmlType::Q8_0, &b).unwrap();
        assert_eq!(x[0], -32.0);
        assert_eq!(x[16], 0.0);
        assert_eq!(x[31], 30.0);
        // Two blocks in a row.
        let two = [b.clone(), b].concat();
        assert_eq!(dequantize(GgmlType::Q8_0, &two).unwrap().len(), 64);
    }

    #[test]
    fn q5_0_and_q5_1_blocks_by_hand() {
        // All nibbles 1; high bits set for elements 0 and 16 (bits 0 and 16 of qh).
        let qh: u32 = 1 | (1 << 16);
        let mut b = h(1.0).to_vec();
        b.extend(qh.to_le_bytes());
        b.extend([0x11u8; 16]);
        let x = dequantize(GgmlType::Q5_0, &b).unwrap();
        assert_eq!(x[0], 1.0); // (1 | 16) - 16
        assert_eq!(x[1], -15.0); // 1 - 16
        assert_eq!(x[16], 1.0);
        assert_eq!(x[17], -15.0);
        let mut b = h(0.5).to_vec();
        b.extend(h(10.0));
        b.extend(qh.to_le_bytes());
        b.extend([0x11u8; 16]);
        let x = dequantize(GgmlType::Q5_1, &b).unwrap();
        assert_eq!(x[0], 17.0 * 0.5 + 10.0);
        assert_eq!(x[1], 0.5 + 10.0);
        assert_eq!(x[16], 17.0 * 0.5 + 10.0);
    }

    #[test]
    fn q2_k_and_q3_k_blocks_by_hand() {
        // Every quant byte 0b11_10_01_00: the 2-bit value at shift 2j is j, so the 32-element
        // groups of a 128-half (one per shift) hold 0, 1, 2, 3.
        // Q2_K: every scale byte 0x21 (scale 1, min 2), d = 1, dmin = 0.5: x = j - 1.
        let mut b = vec![0x21u8; 16];
        b.extend([0xe4u8; 64]);
        b.extend(h(1.0));
        b.extend(h(0.5));
        let x = dequantize(GgmlType::Q2K, &b).unwrap();
        for (e, v) in x.iter().enumerate() {
            assert_eq!(*v, ((e % 128) / 32) as f32 - 1.0, "Q2_K element {e}");
        }
        // Q3_K: every 6-bit scale 33 (low nibbles 1, high bits 0b10) -> 33 - 32 = 1; d = 0.5;
        // high-bit mask 0x0f: set for the first half's four shifts (no -4), clear for the
        // second half's (-4).
        let mut b = vec![0x0fu8; 32];
        b.extend([0xe4u8; 64]);
        b.extend([0x11u8; 8]);
        b.extend([0xaau8; 4]);
        b.extend(h(0.5));
        let x = dequantize(GgmlType::Q3K, &b).unwrap();
        for (e, v) in x.iter().enumerate() {
            let q = ((e % 128) / 32) as f32 - if e < 128 { 0.0 } else { 4.0 };
            assert_eq!(*v, 0.5 * q, "Q3_K element {e}");
        }
    }

    #[test]
    fn q4_k_block_by_hand() {
        // d = 1, dmin = 0.5; sub-block scales 1..=8 and mins 0..8 (6-bit packing: sub-blocks
        // 0..4 in the low 6 bits of bytes 0..4 / 4..8, sub-blocks 4..8 split over bytes 8..12
        // (low/high nibble) and the top 2 bits of bytes 0..8).
        let sc: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 40];
        let mn: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 33];
        let mut s = [0u8; 12];
        s[..4].copy_from_slice(&sc[..4]);
        s[4..8].copy_from_slice(&mn[..4]);
        for j in 4..8 {
            s[j + 4] = (sc[j] & 0x0f) | ((mn[j] & 0x0f) << 4);
            s[j - 4] |= (sc[j] >> 4) << 6;
            s[j] |= (mn[j] >> 4) << 6;
        }
        let mut b = h(1.0).to_vec();
        b.extend(h(0.5));
        b.extend(s);
        // Chunk c (32 bytes) holds sub-block 2c in low nibbles and 2c+1 in high nibbles.
        b.extend((0..128).map(|i| ((i % 16) as u8) | (((15 - i % 16) as u8) << 4)));
        let x = dequantize(GgmlType::Q4K, &b).unwrap();
        assert_eq!(x.len(), 256);
        for sub in 0..8 {
            for l in 0..32 {
                let q = if sub % 2 == 0 { l % 16 } else { 15 - l % 16 } as f32;
                let want = sc[sub] as f32 * q - 0.5 * mn[sub] as f32;
                assert_eq!(x[32 * sub + l], want, "sub-block {sub}, element {l}");
            }
        }
    }

    #[test]
    fn q6_k_block_by_hand() {
        // Element e of a 128-half: l = e % 32, quarter k = e / 32. ql byte l (k = 0, 2) or
        // l + 32 (k = 1, 3), low nibble for k < 2; qh byte l, bits 2k..2k+2.
        // Choose 6-bit q = 32 + (e % 4) - 2 for every element; scales sc[i] = i - 8; d = 0.5.
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        let q_of = |e: usize| (32 + (e % 4) - 2) as u8; // 30..=33
        for half in 0..2 {
            for e in 0..128 {
                let (l, k) = (e % 32, e / 32);
                let q = q_of(e);
                let qi = 64 * half + l + if k % 2 == 1 { 32 } else { 0 };
                if k < 2 {
                    ql[qi] |= q & 0x0f;
                } else {
                    ql[qi] |= (q & 0x0f) << 4;
                }
                qh[32 * half + l] |= (q >> 4) << (2 * k);
            }
        }
        let mut b = ql.to_vec();
        b.extend(qh);
        b.extend((0..16).map(|i| (i as i8 - 8) as u8));
        b.extend(h(0.5));
        let x = dequantize(GgmlType::Q6K, &b).unwrap();
        for half in 0..2 {
            for e in 0..128 {
                let (l, k) = (e % 32, e / 32);
                let scale = (8 * half + l / 16 + 2 * k) as f32 - 8.0;
                let want = 0.5 * scale * (q_of(e) as f32 - 32.0);
                assert_eq!(x[128 * half + e], want, "half {half}, element {e}");
            }
        }
    }

    #[test]
    fn floats_and_refusals() {
        let b: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(dequantize(GgmlType::F32, &b).unwrap(), vec![1.5, -2.0]);
        let b: Vec<u8> = [h(0.25), bf16::from_f32(-3.0).to_le_bytes()].concat();
        assert_eq!(dequantize(GgmlType::F16, &b[..2]).unwrap(), vec![0.25]);
        assert_eq!(dequantize(GgmlType::BF16, &b[2..]).unwrap(), vec![-3.0]);
        // Not a whole block, unsupported type.
        assert!(dequantize(GgmlType::Q8_0, &[0u8; 33]).is_none());
        assert!(dequantize(GgmlType::Q8K, &[0u8; 292]).is_none());
        assert_eq!(GgmlType::from_id(16).unwrap().to_string(), "IQ2_XXS (16)");
        assert!(GgmlType::from_id(4).is_none());
        for id in 0..64 {
            if let Some(t) = GgmlType::from_id(id) {
                assert_eq!(t.id(), id);
                assert_ne!(t.name(), "unknown");
            }
        }
    }
}
