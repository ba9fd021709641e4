//! Paired statistics (placeholder; filled in by the stats module work).
