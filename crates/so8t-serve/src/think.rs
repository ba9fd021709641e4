//! The hidden-thinking stream filter (work in progress).
