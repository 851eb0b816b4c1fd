//! The candle engine (being built).
