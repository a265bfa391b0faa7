//! Deterministic demo data: three legacy vendor databases with ground truth.
