//! Merging incoming rows into `metadata-YYYY.csv` (one row per paper; the
//! newer or equal `updated_at` wins), each file replaced atomically.
