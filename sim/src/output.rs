//! Streaming parquet writers for the result tables, and the one rule every single file hetsim
//! writes follows: written under a temporary name beside its target, flushed to disk, then renamed
//! into place (`write_atomically`, on `publish::PendingFile`). A reader never sees a half-written
//! file, and a failure leaves none behind.
//!
//! Rows are buffered in Arrow builders and written as a row group every `BATCH_ROWS` rows, so
//! memory stays bounded however long the run. The tables of a run are written into a staging
//! directory that is published whole with its manifest when the run succeeded
//! (`publish::StagedDir`): a failed or killed run leaves no result directory behind.

use std::fs::File;
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, StringBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::Error;
use crate::publish::{Contents, PendingFile, StagedDir, out_err};
use crate::records::{
    Cell, ColumnType, InstanceRecord, LinkRecord, RecordSink, RequestRecord, Row, SummaryRecord,
    TransferRecord,
};

const BATCH_ROWS: usize = 8192;
const ROW_GROUP_ROWS: usize = 65_536;

enum Builder {
    Str(StringBuilder),
    U64(UInt64Builder),
    F64(Float64Builder),
}

pub fn schema_of<R: Row>() -> SchemaRef {
    let fields: Vec<Field> = R::COLUMNS
        .iter()
        .map(|c| {
            let ty = match c.ty {
                ColumnType::Utf8 => DataType::Utf8,
                ColumnType::UInt64 => DataType::UInt64,
                ColumnType::Float64 => DataType::Float64,
            };
            Field::new(c.name, ty, c.nullable)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Writes `bytes` to `path` whole or not at all.
pub fn write_atomically(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), Error> {
    let (pending, mut file) = PendingFile::create(path)?;
    file.write_all(bytes.as_ref())
        .map_err(|e| out_err(pending.tmp(), e))?;
    pending.seal(file)?;
    pending.publish().map(drop)
}

/// One parquet table being written into a staging directory.
pub struct TableWriter<R: Row> {
    path: PathBuf,
    rows: u64,
    schema: SchemaRef,
    writer: Option<ArrowWriter<File>>,
    builders: Vec<Builder>,
    buffered: usize,
    _row: PhantomData<R>,
}

impl<R: Row> TableWriter<R> {
    pub fn create(dir: &Path) -> Result<TableWriter<R>, Error> {
        let path = dir.join(Self::file_name());
        let file = File::create(&path).map_err(|e| out_err(&path, e))?;
        let schema = schema_of::<R>();
        // Row groups of 64k rows: a long run holds at most one encoded group per table in memory.
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(|e| out_err(&path, e))?;
        let builders = Self::fresh_builders();
        Ok(TableWriter {
            path,
            rows: 0,
            schema,
            writer: Some(writer),
            builders,
            buffered: 0,
            _row: PhantomData,
        })
    }

    fn file_name() -> String {
        format!("{}.parquet", R::TABLE)
    }

    fn fresh_builders() -> Vec<Builder> {
        R::COLUMNS
            .iter()
            .map(|c| match c.ty {
                ColumnType::Utf8 => Builder::Str(StringBuilder::new()),
                ColumnType::UInt64 => Builder::U64(UInt64Builder::with_capacity(BATCH_ROWS)),
                ColumnType::Float64 => Builder::F64(Float64Builder::with_capacity(BATCH_ROWS)),
            })
            .collect()
    }

    pub fn append(&mut self, row: &R) -> Result<(), Error> {
        for (b, cell) in self.builders.iter_mut().zip(row.cells()) {
            match (b, cell) {
                (Builder::Str(b), Cell::Str(v)) => b.append_option(v),
                (Builder::U64(b), Cell::U64(v)) => b.append_option(v),
                (Builder::F64(b), Cell::F64(v)) => b.append_option(v),
                _ => unreachable!("records.rs tests check every row against its columns"),
            }
        }
        self.buffered += 1;
        self.rows += 1;
        if self.buffered >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        if self.buffered == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| -> ArrayRef {
                match b {
                    Builder::Str(b) => Arc::new(b.finish()),
                    Builder::U64(b) => Arc::new(b.finish()),
                    Builder::F64(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| out_err(&self.path, e))?;
        self.writer
            .as_mut()
            .expect("open until finished")
            .write(&batch)
            .map_err(|e| out_err(&self.path, e))?;
        self.buffered = 0;
        Ok(())
    }

    /// Writes the footer, flushes the file to disk and lists it in `dir`'s manifest.
    fn close(&mut self, dir: &mut StagedDir) -> Result<(), Error> {
        self.flush()?;
        let w = self.writer.take().expect("closed once");
        let file = w.into_inner().map_err(|e| out_err(&self.path, e))?;
        file.sync_all().map_err(|e| out_err(&self.path, e))?;
        dir.record(&Self::file_name(), Some(self.rows));
        Ok(())
    }
}

/// All five tables of a run, in a staging directory published whole by `commit`.
pub struct ResultWriter {
    pub requests: TableWriter<RequestRecord>,
    pub transfers: TableWriter<TransferRecord>,
    pub instances: TableWriter<InstanceRecord>,
    pub links: TableWriter<LinkRecord>,
    pub summary: TableWriter<SummaryRecord>,
    dir: StagedDir,
}

impl ResultWriter {
    /// Starts writing the result directory `dir` (absent, empty, or a previous result that the
    /// commit replaces).
    pub fn create(dir: &Path) -> Result<ResultWriter, Error> {
        let staged = StagedDir::create(dir, Contents::Results)?;
        let at = staged.path();
        Ok(ResultWriter {
            requests: TableWriter::create(at)?,
            transfers: TableWriter::create(at)?,
            instances: TableWriter::create(at)?,
            links: TableWriter::create(at)?,
            summary: TableWriter::create(at)?,
            dir: staged,
        })
    }

    /// Adds a file beside the tables (`hetsim validate`'s comparison.csv).
    pub fn add_file(&mut self, name: &str, bytes: impl AsRef<[u8]>) -> Result<(), Error> {
        self.dir.write(name, bytes)
    }

    /// Where a file beside the tables is written before the commit; `record` lists it.
    pub fn staged_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Lists a file written at `staged_path(name)` (and flushed) in the manifest.
    pub fn record(&mut self, name: &str) {
        self.dir.record(name, None);
    }

    /// Closes every table, then publishes the directory with its manifest; returns its files.
    pub fn commit(mut self) -> Result<Vec<PathBuf>, Error> {
        self.summary.close(&mut self.dir)?;
        self.requests.close(&mut self.dir)?;
        self.transfers.close(&mut self.dir)?;
        self.instances.close(&mut self.dir)?;
        self.links.close(&mut self.dir)?;
        self.dir.commit()
    }
}

impl RecordSink for ResultWriter {
    fn request(&mut self, r: &RequestRecord) -> Result<(), Error> {
        self.requests.append(r)
    }
    fn transfer(&mut self, t: &TransferRecord) -> Result<(), Error> {
        self.transfers.append(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::Manifest;
    use crate::publish::tests::names;

    #[test]
    fn an_abandoned_run_leaves_no_table_and_a_committed_one_all_five() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        let w = ResultWriter::create(&dir).unwrap();
        assert_eq!(names(root.path()).len(), 1, "one staging directory");
        drop(w);
        assert!(names(root.path()).is_empty());
        let files = ResultWriter::create(&dir).unwrap().commit().unwrap();
        assert_eq!(files[0], dir.join("summary.parquet"));
        assert_eq!(
            names(&dir),
            [
                "instances.parquet",
                "links.parquet",
                "manifest.json",
                "requests.parquet",
                "summary.parquet",
                "transfers.parquet"
            ]
        );
        let m = Manifest::read(&dir, Contents::Results).unwrap();
        assert!(m.files.iter().all(|f| f.rows == Some(0)), "{m:?}");
    }
}
