//! One error type for the harness. Every CUDA call is checked and its error names the call and
//! what it was doing, so a failure on the GPU machine can be read from the log alone.

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// The CUDA driver (or a CUDA library we need) cannot be loaded on this machine.
    NoDriver(String),
    /// A CUDA driver call returned an error.
    Cuda {
        call: String,
        code: i32,
        name: String,
        message: String,
    },
    /// cuBLASLt returned an error.
    Cublas { call: String, status: String },
    /// NVRTC could not compile one of kernels/*.cu.
    Nvrtc { kernel: String, log: String },
    /// The user asked for something impossible (bad flag, too few GPUs, bad shape...).
    Invalid(String),
    /// Reading or writing a file.
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A result failed its own check (e.g. checksums differ): the run is wrong, not the input.
    Check(String),
    /// From the simulator's side of a run (scenario, records, result files): keeps its kind.
    Sim(hetsim_sim::error::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Exit code for the CLI: 2 for bad input or a machine without CUDA (the user must act),
    /// 1 for a failure during the run (writing results included), 70 for a simulator bug.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NoDriver(_) | Error::Invalid(_) => 2,
            Error::Sim(e) => e.exit_code().into(),
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoDriver(m) => write!(f, "no CUDA driver found: {m}"),
            Error::Cuda {
                call,
                code,
                name,
                message,
            } => {
                write!(f, "CUDA error in {call}: {name} ({code}): {message}")
            }
            Error::Cublas { call, status } => write!(f, "cuBLASLt error in {call}: {status}"),
            Error::Nvrtc { kernel, log } => write!(f, "NVRTC could not compile {kernel}:\n{log}"),
            Error::Invalid(m) => write!(f, "invalid input: {m}"),
            Error::Io { path, source } => write!(f, "{path}: {source}"),
            Error::Check(m) => write!(f, "check failed: {m}"),
            Error::Sim(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<hetsim_sim::error::Error> for Error {
    fn from(e: hetsim_sim::error::Error) -> Self {
        Error::Sim(e)
    }
}

pub fn io_err(path: &std::path::Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hetsim_sim::error::{Error as SimError, InputError};

    #[test]
    fn a_simulator_error_keeps_its_exit_code() {
        let code = |e: SimError| Error::Sim(e).exit_code();
        assert_eq!(code(InputError::new("bad field").into()), 2);
        assert_eq!(code(SimError::Output("out: disk full".into())), 1);
        assert_eq!(code(SimError::Internal("pool not empty".into())), 70);
        let io = io_err(
            std::path::Path::new("x"),
            std::io::Error::other("read-only"),
        );
        assert_eq!(io.exit_code(), 1);
    }
}
