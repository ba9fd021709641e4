//! Metadata values as the exporter builds them (converted to the container's values when the
//! file is written).

/// A metadata value of the kinds an exported model needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Meta {
    /// A string.
    Str(String),
    /// u32.
    U32(u32),
    /// i32.
    I32(i32),
    /// f32.
    F32(f32),
    /// bool.
    Bool(bool),
    /// An array of strings.
    StrArray(Vec<String>),
    /// An array of i32.
    I32Array(Vec<i32>),
    /// An array of f32.
    F32Array(Vec<f32>),
}
