//! Streaming parquet writers for the result tables, and the one rule every file hetsim writes
//! follows: written under a temporary name beside its target, flushed to disk, then renamed into
//! place (`PendingFile`, `write_atomically`). A reader never sees a half-written file, and a
//! failure leaves none behind.
//!
//! Rows are buffered in Arrow builders and written as a row group every `BATCH_ROWS` rows, so
//! memory stays bounded however long the run. Each table is renamed into place only when the whole
//! run succeeded: a failed run leaves no half-written table behind.

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

/// A file being written under a hidden temporary name beside its target (`.NAME.tmp-PID`, so two
/// runs writing one directory do not share one); `publish` moves it into place, and dropping it
/// unpublished removes it.
pub struct PendingFile {
    tmp: PathBuf,
    path: PathBuf,
    published: bool,
}

impl PendingFile {
    pub fn create(path: &Path) -> Result<(PendingFile, File), Error> {
        let name = path
            .file_name()
            .ok_or_else(|| out_err(path, "not a file name"))?;
        let tmp = path.with_file_name(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::create(&tmp).map_err(|e| out_err(&tmp, e))?;
        let pending = PendingFile {
            tmp,
            path: path.to_path_buf(),
            published: false,
        };
        Ok((pending, file))
    }

    /// Where the file is while it is written, for error messages.
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// Flushes `file` (this pending file's handle) to disk, so the rename never exposes a file
    /// whose bytes are still only in the page cache.
    pub fn seal(&self, file: File) -> Result<(), Error> {
        file.sync_all().map_err(|e| out_err(&self.tmp, e))
    }

    /// Renames the sealed file into place.
    pub fn publish(mut self) -> Result<PathBuf, Error> {
        std::fs::rename(&self.tmp, &self.path).map_err(|e| out_err(&self.path, e))?;
        self.published = true;
        Ok(std::mem::take(&mut self.path))
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` whole or not at all.
pub fn write_atomically(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), Error> {
    let (pending, mut file) = PendingFile::create(path)?;
    file.write_all(bytes.as_ref())
        .map_err(|e| out_err(pending.tmp(), e))?;
    pending.seal(file)?;
    pending.publish().map(drop)
}

/// One parquet table being written.
pub struct TableWriter<R: Row> {
    file: PendingFile,
    schema: SchemaRef,
    writer: Option<ArrowWriter<File>>,
    builders: Vec<Builder>,
    buffered: usize,
    _row: PhantomData<R>,
}

pub(crate) fn out_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Output(format!("{}: {e}", path.display()))
}

impl<R: Row> TableWriter<R> {
    pub fn create(dir: &Path) -> Result<TableWriter<R>, Error> {
        let (pending, file) = PendingFile::create(&dir.join(format!("{}.parquet", R::TABLE)))?;
        let schema = schema_of::<R>();
        // Row groups of 64k rows: a long run holds at most one encoded group per table in memory.
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(|e| out_err(pending.tmp(), e))?;
        let builders = Self::fresh_builders();
        Ok(TableWriter {
            file: pending,
            schema,
            writer: Some(writer),
            builders,
            buffered: 0,
            _row: PhantomData,
        })
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
            .map_err(|e| out_err(self.file.tmp(), e))?;
        self.writer
            .as_mut()
            .expect("open until finished")
            .write(&batch)
            .map_err(|e| out_err(self.file.tmp(), e))?;
        self.buffered = 0;
        Ok(())
    }

    /// Writes the footer and flushes the file to disk; it stays at its temporary name until
    /// `publish`.
    fn close(&mut self) -> Result<(), Error> {
        self.flush()?;
        let w = self.writer.take().expect("closed once");
        let file = w.into_inner().map_err(|e| out_err(self.file.tmp(), e))?;
        self.file.seal(file)
    }

    fn publish(self) -> Result<PathBuf, Error> {
        self.file.publish()
    }
}

/// All five tables of a run.
pub struct ResultWriter {
    pub requests: TableWriter<RequestRecord>,
    pub transfers: TableWriter<TransferRecord>,
    pub instances: TableWriter<InstanceRecord>,
    pub links: TableWriter<LinkRecord>,
    pub summary: TableWriter<SummaryRecord>,
}

impl ResultWriter {
    pub fn create(dir: &Path) -> Result<ResultWriter, Error> {
        std::fs::create_dir_all(dir).map_err(|e| out_err(dir, e))?;
        Ok(ResultWriter {
            requests: TableWriter::create(dir)?,
            transfers: TableWriter::create(dir)?,
            instances: TableWriter::create(dir)?,
            links: TableWriter::create(dir)?,
            summary: TableWriter::create(dir)?,
        })
    }

    /// Closes every table, then moves them all into place.
    pub fn commit(mut self) -> Result<Vec<PathBuf>, Error> {
        self.requests.close()?;
        self.transfers.close()?;
        self.instances.close()?;
        self.links.close()?;
        self.summary.close()?;
        Ok(vec![
            self.summary.publish()?,
            self.requests.publish()?,
            self.transfers.publish()?,
            self.instances.publish()?,
            self.links.publish()?,
        ])
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

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_write_leaves_the_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.md");
        write_atomically(&p, "first").unwrap();
        write_atomically(&p, "second").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "second");
        assert_eq!(names(dir.path()), ["out.md"]);
        // A folder that does not exist: an output error naming the file, nothing written.
        let bad = dir.path().join("missing").join("out.md");
        let e = write_atomically(&bad, "x").unwrap_err();
        assert!(matches!(e, Error::Output(_)), "{e:?}");
        assert!(e.to_string().contains("missing"), "{e}");
        assert_eq!(names(dir.path()), ["out.md"]);
    }

    #[test]
    fn an_abandoned_run_leaves_no_table() {
        let dir = tempfile::tempdir().unwrap();
        let w = ResultWriter::create(dir.path()).unwrap();
        assert_eq!(
            names(dir.path()).len(),
            5,
            "five temporaries while the run lasts"
        );
        drop(w);
        assert!(names(dir.path()).is_empty());
        let files = ResultWriter::create(dir.path()).unwrap().commit().unwrap();
        assert_eq!(files[0], dir.path().join("summary.parquet"));
        assert_eq!(
            names(dir.path()),
            [
                "instances.parquet",
                "links.parquet",
                "requests.parquet",
                "summary.parquet",
                "transfers.parquet"
            ]
        );
    }
}
