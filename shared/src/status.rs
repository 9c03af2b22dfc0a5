//! Run statuses and failure reasons: one typed enum each, shared by both binaries,
//! stored as lowercase strings (checked by the database) and sent as such in JSON.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} `{value}`")]
pub struct ParseError {
    pub kind: &'static str,
    pub value: String,
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseError { kind: $kind, value: s.to_owned() }),
                }
            }
        }
    };
}

string_enum!(
    /// Where a run is in its life. `success`, `failed` and `cancelled` are final.
    RunStatus, "status" {
        Queued => "queued",
        Running => "running",
        Success => "success",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl RunStatus {
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Success | RunStatus::Failed | RunStatus::Cancelled)
    }
}

string_enum!(
    /// Why a run did not succeed.
    FailureReason, "failure reason" {
        ExitCode => "exit_code",
        Timeout => "timeout",
        Cancelled => "cancelled",
        Lost => "lost",
        SetupError => "setup_error",
        NoRunner => "no_runner",
    }
);

string_enum!(
    /// Which output a log line came from. `system` lines are Fast-Flow's own
    /// (image pull progress, setup errors), never the container's.
    LogStream, "log stream" {
        Stdout => "stdout",
        Stderr => "stderr",
        System => "system",
    }
);

impl LogStream {
    pub fn to_byte(self) -> u8 {
        match self {
            LogStream::Stdout => 1,
            LogStream::Stderr => 2,
            LogStream::System => 3,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(LogStream::Stdout),
            2 => Some(LogStream::Stderr),
            3 => Some(LogStream::System),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_text_and_json() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().ok(), Some(*s));
            let json = serde_json::to_string(s).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert!("Running".parse::<RunStatus>().is_err());
    }

    #[test]
    fn only_terminal_statuses_are_final() {
        let finals: Vec<_> = RunStatus::ALL.iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals, [&RunStatus::Success, &RunStatus::Failed, &RunStatus::Cancelled]);
    }

    #[test]
    fn stream_bytes_round_trip() {
        for s in LogStream::ALL {
            assert_eq!(LogStream::from_byte(s.to_byte()), Some(*s));
        }
        assert_eq!(LogStream::from_byte(0), None);
    }
}
