//! A CTranslate2 `model.bin` writer for tests: files written byte by byte from the format
//! `ctranslate2.specs.model_spec` serialises.
#![allow(dead_code)]

/// A `model.bin` writer (binary version 6).
pub struct Bin {
    pub version: u32,
    pub spec: String,
    pub revision: u32,
    pub vars: Vec<(String, Vec<u32>, u8, Vec<u8>)>,
    pub aliases: Vec<(String, String)>,
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend(((s.len() + 1) as u16).to_le_bytes());
    out.extend(s.as_bytes());
    out.push(0);
}

impl Bin {
    pub fn new(spec: &str, revision: u32) -> Self {
        Self {
            version: 6,
            spec: spec.into(),
            revision,
            vars: vec![],
            aliases: vec![],
        }
    }

    pub fn var(&mut self, name: &str, shape: &[u32], dtype: u8, data: Vec<u8>) -> &mut Self {
        self.vars.push((name.into(), shape.to_vec(), dtype, data));
        self
    }

    pub fn f32(&mut self, name: &str, shape: &[u32], v: &[f32]) -> &mut Self {
        self.var(
            name,
            shape,
            0,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = self.version.to_le_bytes().to_vec();
        string(&mut out, &self.spec);
        out.extend(self.revision.to_le_bytes());
        out.extend((self.vars.len() as u32).to_le_bytes());
        for (name, shape, dtype, data) in &self.vars {
            string(&mut out, name);
            out.push(shape.len() as u8);
            for d in shape {
                out.extend(d.to_le_bytes());
            }
            out.push(*dtype);
            out.extend((data.len() as u32).to_le_bytes());
            out.extend(data);
        }
        out.extend((self.aliases.len() as u32).to_le_bytes());
        for (a, t) in &self.aliases {
            string(&mut out, a);
            string(&mut out, t);
        }
        out
    }
}
