//! The model store (work in progress).
