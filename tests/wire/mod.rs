//! A protobuf encoder written by hand, independent of prost's generated code: the wire-number
//! tests of both Iris eras write each message tag by tag with it.
#![allow(dead_code)]

use prost::Message;

/// A protobuf message written by hand, field by field.
#[derive(Default)]
pub struct Wire(pub Vec<u8>);

impl Wire {
    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, tag: u32, wire_type: u64) {
        self.raw_varint((u64::from(tag) << 3) | wire_type);
    }

    /// int32, int64, bool and enums: varint (negative int32 sign-extends to 10 bytes).
    pub fn varint(mut self, tag: u32, v: i64) -> Self {
        self.key(tag, 0);
        self.raw_varint(v as u64);
        self
    }

    pub fn double(mut self, tag: u32, v: f64) -> Self {
        self.key(tag, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bytes(mut self, tag: u32, v: &[u8]) -> Self {
        self.key(tag, 2);
        self.raw_varint(v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }

    pub fn str(self, tag: u32, v: &str) -> Self {
        self.bytes(tag, v.as_bytes())
    }

    pub fn msg(self, tag: u32, m: Wire) -> Self {
        self.bytes(tag, &m.0)
    }

    pub fn decode<M: Message + Default>(&self) -> M {
        M::decode(&self.0[..]).expect("decodes")
    }
}

pub fn map_entry(key: &str, value: Wire) -> Wire {
    Wire::default().str(1, key).msg(2, value)
}
