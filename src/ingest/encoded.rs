//! Metadata rows encoded once, as the CSV line papersys writes for them,
//! with the few things the merge needs beside: the `paper_id` key, the raw
//! `updated_at` and the year file. Sorting, spilling and merging then move
//! bytes instead of 13 strings per row, and the encoding (the costly part)
//! runs on the parsing threads.
//!
//! The encoding is exactly [`crate::metadata::write_records`]'s (the `csv`
//! crate's: a field is quoted when it holds `,`, `"`, `\r` or `\n`, quotes
//! doubled, `\n` ends a row), so the bytes of a row are those of its line
//! in the year file, and two rows with equal columns have equal bytes.

use crate::metadata::PaperRecord;

/// Appends `field` CSV-encoded (quoted only when necessary).
pub fn encode_field(out: &mut Vec<u8>, field: &[u8]) {
    let needs_quotes =
        memchr::memchr3(b',', b'"', b'\n', field).is_some() || memchr::memchr(b'\r', field).is_some();
    if !needs_quotes {
        out.extend_from_slice(field);
        return;
    }
    out.push(b'"');
    let mut rest = field;
    while let Some(at) = memchr::memchr(b'"', rest) {
        out.extend_from_slice(&rest[..=at]);
        out.push(b'"');
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// One row's place in a [`RowBatch`].
#[derive(Clone, Copy, Debug)]
struct Meta {
    /// Offset of the key in the batch's data; `updated_at` and the CSV
    /// line follow it.
    start: usize,
    key: u32,
    updated: u32,
    csv: u32,
    /// Length of the first 12 columns' encoding (all but `source`).
    cmp: u32,
    year: u16,
}

/// A borrowed encoded row.
#[derive(Clone, Copy, Debug)]
pub struct RowRef<'a> {
    /// `paper_id` as written (the merge key).
    pub key: &'a [u8],
    /// `updated_at` as written.
    pub updated: &'a [u8],
    /// The year file the row belongs to.
    pub year: u16,
    /// The CSV line, `\n` included.
    pub csv: &'a [u8],
    /// Bytes of `csv` that encode the first 12 columns.
    pub cmp: usize,
}

impl RowRef<'_> {
    /// Whether both rows have the same columns but for `source`.
    pub fn same_except_source(&self, other: &RowRef<'_>) -> bool {
        self.csv[..self.cmp] == other.csv[..other.cmp]
    }

    /// `updated_at` as text (lossy only for bytes a row never holds: rows
    /// are built from `&str`).
    pub fn updated_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.updated)
    }

    /// Bytes a row takes in memory, for the merge's budget.
    pub fn size(&self) -> usize {
        self.key.len() + self.updated.len() + self.csv.len() + std::mem::size_of::<Meta>()
    }
}

/// Rows encoded into one buffer.
#[derive(Debug, Default)]
pub struct RowBatch {
    data: Vec<u8>,
    rows: Vec<Meta>,
}

impl RowBatch {
    /// An empty batch with room for about `bytes` of rows.
    pub fn with_capacity(bytes: usize, rows: usize) -> RowBatch {
        RowBatch {
            data: Vec::with_capacity(bytes),
            rows: Vec::with_capacity(rows),
        }
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the batch holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Bytes the batch holds (its memory, roughly).
    pub fn bytes(&self) -> usize {
        self.data.len() + self.rows.len() * std::mem::size_of::<Meta>()
    }

    /// Makes room for `bytes` more of rows and `rows` more rows.
    pub fn reserve(&mut self, bytes: usize, rows: usize) {
        self.data.reserve(bytes);
        self.rows.reserve(rows);
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.data.clear();
        self.rows.clear();
    }

    /// Appends a row of the 13 contract columns in order, filed in `year`.
    pub fn push(&mut self, fields: [&str; 13], year: u16) {
        let start = self.data.len();
        self.data.extend_from_slice(fields[0].as_bytes());
        self.data.extend_from_slice(fields[7].as_bytes());
        let csv_start = self.data.len();
        let mut cmp = 0;
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                self.data.push(b',');
            }
            if i == 12 {
                cmp = self.data.len() - 1 - csv_start;
            }
            encode_field(&mut self.data, field.as_bytes());
        }
        self.data.push(b'\n');
        self.rows.push(Meta {
            start,
            key: fields[0].len() as u32,
            updated: fields[7].len() as u32,
            csv: (self.data.len() - csv_start) as u32,
            cmp: cmp as u32,
            year,
        });
    }

    /// Appends `record`, filed in `year`.
    pub fn push_record(&mut self, record: &PaperRecord, year: u16) {
        self.push(record.fields(), year);
    }

    /// Appends a copy of `row`.
    pub fn push_ref(&mut self, row: RowRef<'_>) {
        let start = self.data.len();
        self.data.extend_from_slice(row.key);
        self.data.extend_from_slice(row.updated);
        self.data.extend_from_slice(row.csv);
        self.rows.push(Meta {
            start,
            key: row.key.len() as u32,
            updated: row.updated.len() as u32,
            csv: row.csv.len() as u32,
            cmp: row.cmp as u32,
            year: row.year,
        });
    }

    /// The `i`-th row.
    pub fn get(&self, i: usize) -> RowRef<'_> {
        let m = self.rows[i];
        let key_end = m.start + m.key as usize;
        let updated_end = key_end + m.updated as usize;
        RowRef {
            key: &self.data[m.start..key_end],
            updated: &self.data[key_end..updated_end],
            year: m.year,
            csv: &self.data[updated_end..updated_end + m.csv as usize],
            cmp: m.cmp as usize,
        }
    }

    /// The rows in order.
    pub fn iter(&self) -> impl Iterator<Item = RowRef<'_>> {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// One row owned, its buffer reused from row to row.
#[derive(Clone, Debug, Default)]
pub struct OwnedRow {
    buf: Vec<u8>,
    key: usize,
    updated: usize,
    cmp: usize,
    year: u16,
}

impl OwnedRow {
    /// Replaces the content with a copy of `row`.
    pub fn set(&mut self, row: RowRef<'_>) {
        self.buf.clear();
        self.buf.extend_from_slice(row.key);
        self.buf.extend_from_slice(row.updated);
        self.buf.extend_from_slice(row.csv);
        self.key = row.key.len();
        self.updated = row.updated.len();
        self.cmp = row.cmp;
        self.year = row.year;
    }

    /// Replaces the content with `record`, filed in `year`.
    pub fn set_record(&mut self, record: &PaperRecord, year: u16) {
        let mut batch = RowBatch {
            data: std::mem::take(&mut self.buf),
            rows: Vec::with_capacity(1),
        };
        batch.data.clear();
        batch.push_record(record, year);
        let m = batch.rows[0];
        self.buf = batch.data;
        self.key = m.key as usize;
        self.updated = m.updated as usize;
        self.cmp = m.cmp as usize;
        self.year = year;
    }

    /// Fills the row from its parts: `buf` must hold key, `updated_at` and
    /// the CSV line, in that order, of the lengths given.
    pub fn set_parts(&mut self, key: usize, updated: usize, cmp: usize, year: u16) {
        self.key = key;
        self.updated = updated;
        self.cmp = cmp;
        self.year = year;
    }

    /// The buffer, to be filled by [`OwnedRow::set_parts`]'s caller.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// The row borrowed.
    pub fn as_ref(&self) -> RowRef<'_> {
        let updated_end = self.key + self.updated;
        RowRef {
            key: &self.buf[..self.key],
            updated: &self.buf[self.key..updated_end],
            year: self.year,
            csv: &self.buf[updated_end..],
            cmp: self.cmp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(fields: &[String]) -> PaperRecord {
        PaperRecord::from_fields(std::array::from_fn(|i| fields[i].as_str()))
    }

    proptest! {
        #[test]
        fn rows_encode_exactly_as_write_records(
            fields in proptest::collection::vec("[a-c ,\"\r\n;é]{0,6}", 13),
            other_source in "[a-c,\"]{0,3}",
        ) {
            let r = record(&fields);
            let mut expected = Vec::new();
            crate::metadata::write_records(&mut expected, [&r]).unwrap();
            let header_end = expected.iter().position(|&b| b == b'\n').unwrap() + 1;
            let mut batch = RowBatch::default();
            batch.push_record(&r, 2024);
            let row = batch.get(0);
            prop_assert_eq!(row.csv, &expected[header_end..]);
            prop_assert_eq!(row.key, r.paper_id.as_bytes());
            prop_assert_eq!(row.updated, r.updated_at.as_bytes());
            prop_assert_eq!(row.year, 2024);

            let mut twin = r.clone();
            twin.source = other_source;
            let mut owned = OwnedRow::default();
            owned.set_record(&twin, 2024);
            prop_assert!(row.same_except_source(&owned.as_ref()));
            twin.doi.push('x');
            owned.set_record(&twin, 2024);
            prop_assert!(!row.same_except_source(&owned.as_ref()));
        }
    }
}
