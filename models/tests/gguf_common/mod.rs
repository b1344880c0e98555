//! A GGUF writer for tests: files are written byte by byte from the format's description.
#![allow(dead_code)]

use half::f16;
use models::gguf::GgufFile;

/// A GGUF writer for tests: metadata and tensors with raw, already-encoded data.
pub struct Writer {
    pub version: u32,
    pub alignment: usize,
    pub kv: Vec<(String, Vec<u8>)>,
    pub tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn s(out: &mut Vec<u8>, text: &str) {
    out.extend((text.len() as u64).to_le_bytes());
    out.extend(text.as_bytes());
}

impl Writer {
    pub fn new(version: u32) -> Self {
        Self {
            version,
            alignment: 32,
            kv: vec![],
            tensors: vec![],
        }
    }

    /// A value already encoded as `u32 type` + payload.
    pub fn raw(&mut self, key: &str, ty: u32, payload: Vec<u8>) -> &mut Self {
        let mut v = ty.to_le_bytes().to_vec();
        v.extend(payload);
        self.kv.push((key.into(), v));
        self
    }

    pub fn u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.raw(key, 4, v.to_le_bytes().to_vec())
    }

    pub fn f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.raw(key, 6, v.to_le_bytes().to_vec())
    }

    pub fn bool(&mut self, key: &str, v: bool) -> &mut Self {
        self.raw(key, 7, vec![v as u8])
    }

    pub fn str(&mut self, key: &str, v: &str) -> &mut Self {
        let mut p = vec![];
        s(&mut p, v);
        self.raw(key, 8, p)
    }

    pub fn strs(&mut self, key: &str, items: &[&str]) -> &mut Self {
        let mut p = 8u32.to_le_bytes().to_vec();
        p.extend((items.len() as u64).to_le_bytes());
        for it in items {
            s(&mut p, it);
        }
        self.raw(key, 9, p)
    }

    pub fn i32s(&mut self, key: &str, items: &[i32]) -> &mut Self {
        let mut p = 5u32.to_le_bytes().to_vec();
        p.extend((items.len() as u64).to_le_bytes());
        for it in items {
            p.extend(it.to_le_bytes());
        }
        self.raw(key, 9, p)
    }

    pub fn tensor(&mut self, name: &str, ne: &[u64], ty: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.push((name.into(), ne.to_vec(), ty, data));
        self
    }

    pub fn f32_tensor(&mut self, name: &str, ne: &[u64], values: &[f32]) -> &mut Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, ne, 0, data)
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            s(&mut out, k);
            out.extend(v);
        }
        let a = self.alignment;
        let mut offset = 0usize;
        let mut offsets = vec![];
        for (name, ne, ty, data) in &self.tensors {
            s(&mut out, name);
            out.extend((ne.len() as u32).to_le_bytes());
            for d in ne {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len()).div_ceil(a) * a;
        }
        while !out.len().is_multiple_of(a) {
            out.push(0);
        }
        let start = out.len();
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize(start + off, 0);
            out.extend(data);
        }
        out
    }

    pub fn file(&self) -> GgufFile {
        GgufFile::from_bytes("test.gguf", self.bytes()).expect("valid test file")
    }
}

pub fn h(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}
