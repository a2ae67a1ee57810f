//! Streaming parquet writers for the result tables.
//!
//! Rows are buffered in Arrow builders and written as a row group every `BATCH_ROWS` rows, so
//! memory stays bounded however long the run. Each table is written to a hidden temporary file in
//! the output directory and renamed into place only when the whole run succeeded: a failed run
//! leaves no half-written table behind.

use std::fs::File;
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

/// One parquet table being written.
pub struct TableWriter<R: Row> {
    tmp: PathBuf,
    path: PathBuf,
    schema: SchemaRef,
    writer: Option<ArrowWriter<File>>,
    builders: Vec<Builder>,
    buffered: usize,
    _row: PhantomData<R>,
}

fn out_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Output(format!("{}: {e}", path.display()))
}

impl<R: Row> TableWriter<R> {
    pub fn create(dir: &Path) -> Result<TableWriter<R>, Error> {
        let path = dir.join(format!("{}.parquet", R::TABLE));
        let tmp = dir.join(format!(".{}.parquet.tmp-{}", R::TABLE, std::process::id()));
        let file = File::create(&tmp).map_err(|e| out_err(&tmp, e))?;
        let schema = schema_of::<R>();
        // Row groups of 64k rows: a long run holds at most one encoded group per table in memory.
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(|e| out_err(&tmp, e))?;
        let builders = Self::fresh_builders();
        Ok(TableWriter {
            tmp,
            path,
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
        let batch =
            RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| out_err(&self.tmp, e))?;
        self.writer
            .as_mut()
            .expect("open until finished")
            .write(&batch)
            .map_err(|e| out_err(&self.tmp, e))?;
        self.buffered = 0;
        Ok(())
    }

    /// Writes the footer; the file stays at its temporary name until `publish`.
    fn close(&mut self) -> Result<(), Error> {
        self.flush()?;
        if let Some(w) = self.writer.take() {
            w.close().map_err(|e| out_err(&self.tmp, e))?;
        }
        Ok(())
    }

    fn publish(&self) -> Result<(), Error> {
        std::fs::rename(&self.tmp, &self.path).map_err(|e| out_err(&self.path, e))
    }
}

impl<R: Row> Drop for TableWriter<R> {
    fn drop(&mut self) {
        // Still at its temporary name: the run failed or was abandoned.
        let _ = std::fs::remove_file(&self.tmp);
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
        self.requests.publish()?;
        self.transfers.publish()?;
        self.instances.publish()?;
        self.links.publish()?;
        self.summary.publish()?;
        Ok(vec![
            self.summary.path.clone(),
            self.requests.path.clone(),
            self.transfers.path.clone(),
            self.instances.path.clone(),
            self.links.path.clone(),
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
