//! Quantized dot products (work in progress).
