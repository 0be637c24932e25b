//! The states payrun stores, as types: an item's state, the one name every output gives it
//! ([`Status`]), a batch's state and an export's. Each is stored as its name (the same text
//! earlier versions wrote), read back checked, and answers the questions asked of it here,
//! so no other module spells a state.

use rusqlite::types::ValueRef;
use std::fmt;

/// Declares a stored state enum: its variants with their stored names, `as_str`, `parse`,
/// `Display`, and the conversions of `state::sql` (an unknown name read back is an error).
macro_rules! stored_state {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        /// Ordered by name, as every listing shows them.
        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.as_str().cmp(other.as_str())
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl crate::state::sql::Arg for $name {
            fn value(&self) -> crate::state::sql::Value<'_> {
                crate::state::sql::Value::Text(self.as_str())
            }
        }

        impl crate::state::sql::Col for $name {
            fn from_lite(value: ValueRef<'_>) -> Result<Self, String> {
                let s = value.as_str().map_err(|e| e.to_string())?;
                $name::parse(s).ok_or_else(|| format!(concat!("unknown ", stringify!($name), " '{}'"), s))
            }
        }
    };
}

stored_state! {
    /// An item's state as stored: where its step stands for its row.
    ItemState {
        /// Planned, not sent yet (the default).
        #[default]
        Pending = "pending",
        /// Sent, the answer unknown (shown as `in_doubt`).
        InFlight = "in_flight",
        /// Its batch is short of funds and may still pay.
        AwaitingFunds = "awaiting_funds",
        Succeeded = "succeeded",
        Failed = "failed",
        /// Waiting for an earlier step of its row.
        Blocked = "blocked",
        /// The step's `when` is false for the row.
        Skipped = "skipped",
        /// A scheduled payout recalled with `payrun cancel`: not paid, and planned again
        /// only by `--retry-failed`.
        Cancelled = "cancelled",
    }
}

stored_state! {
    /// A payout batch's state as stored.
    BatchState {
        /// Taking rows, never sent.
        #[default]
        Open = "open",
        /// Sent, the answer unknown.
        InFlight = "in_flight",
        /// Accepted by the provider, not yet completed.
        Sent = "sent",
        Completed = "completed",
        /// The provider's batch expired (unfunded) or was cancelled.
        Expired = "expired",
        /// Refused: never reached the provider as a batch.
        Failed = "failed",
        /// Recalled with `payrun cancel` before its scheduled time.
        Cancelled = "cancelled",
    }
}

stored_state! {
    /// An export's state as stored.
    ExportState {
        #[default]
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        /// Stopped by a signal: the watermark stays.
        Interrupted = "interrupted",
    }
}

stored_state! {
    /// The one name an item goes by in everything payrun prints and writes (logs, `status`,
    /// the run's summary, summary.json, results.csv, JUnit, HTML, metrics): its state, with
    /// `in_flight` called `in_doubt`, and `conflict` for a row that changed after it was sent.
    Status {
        #[default]
        Pending = "pending",
        /// Sent, the answer unknown: it settles and is looked up before anything else.
        InDoubt = "in_doubt",
        /// Done at the provider.
        Succeeded = "succeeded",
        /// Refused, or its batch can no longer pay.
        Failed = "failed",
        /// Waiting for an earlier step of its row.
        Blocked = "blocked",
        /// The step's `when` is false for the row.
        Skipped = "skipped",
        /// The row changed after it was sent: the change is never sent.
        Conflict = "conflict",
        /// Its batch is short of funds (`HC_PAYOUT1`) and may still pay.
        AwaitingFunds = "awaiting_funds",
        /// Its scheduled batch was recalled with `payrun cancel`.
        Cancelled = "cancelled",
    }
}

impl Status {
    /// The name of an item in `state`, in conflict or not.
    pub fn of(state: ItemState, conflict: bool) -> Status {
        if conflict {
            return Status::Conflict;
        }
        match state {
            ItemState::Pending => Status::Pending,
            ItemState::InFlight => Status::InDoubt,
            ItemState::AwaitingFunds => Status::AwaitingFunds,
            ItemState::Succeeded => Status::Succeeded,
            ItemState::Failed => Status::Failed,
            ItemState::Blocked => Status::Blocked,
            ItemState::Skipped => Status::Skipped,
            ItemState::Cancelled => Status::Cancelled,
        }
    }

    /// Whether an item of this name needs a person (or another run) before its row is done:
    /// every name but `succeeded` and `skipped`.
    pub fn needs_a_look(self) -> bool {
        !matches!(self, Status::Succeeded | Status::Skipped)
    }

    /// Whether it counts as a failure where outcomes are pass, fail or skip (JUnit).
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Failed | Status::Conflict)
    }

    /// What to do about items of this name, as the closing summary says it.
    pub fn action(self) -> &'static str {
        match self {
            Status::Conflict => {
                "changed in the file after they were sent: the change was not sent — pay it by hand or in a new scope"
            }
            Status::AwaitingFunds => {
                "their batch is short of funds and may still pay: top up, then `payrun reconcile`"
            }
            Status::InDoubt => {
                "sent, the answer unknown: the next run looks them up before anything is sent again"
            }
            Status::Failed => {
                "refused (reasons in the log and results.csv): fix and run with `--retry-failed`"
            }
            Status::Blocked => {
                "waiting for an earlier step of their row: the next run picks them up"
            }
            Status::Pending => "not sent: the next run sends them",
            Status::Cancelled => {
                "recalled with `payrun cancel` before they paid: run with `--retry-failed` to pay them after all"
            }
            Status::Succeeded | Status::Skipped => "",
        }
    }

    /// The reason shown for an item needing a look: its own code and message, or for a
    /// name that carries none, what it means and what happens next (a conflict always
    /// says so, whatever the item last recorded).
    pub fn reason(
        self,
        code: Option<String>,
        message: Option<String>,
    ) -> (Option<String>, Option<String>) {
        let has = message.as_deref().is_some_and(|m| !m.is_empty());
        let default = match self {
            Status::InDoubt => Some((
                "IN_DOUBT",
                "sent, the answer unknown: it is looked up once it settles (limits.settle), before anything is sent again",
            )),
            Status::Conflict => Some((
                "CONFLICT",
                "the row changed after it was sent: the change is not sent (pay it by hand, or in a new scope)",
            )),
            Status::Pending => Some(("PENDING", "not sent yet: the next run sends it")),
            _ => None,
        };
        match default {
            Some((c, m)) if self == Status::Conflict || !has => (Some(c.into()), Some(m.into())),
            _ => (code, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        use crate::state::sql::args;
        let state = crate::state::State::open_in_memory().unwrap();
        let conn = state.connection();
        for s in ItemState::ALL {
            let back: ItemState = conn.one("SELECT ?1", args![s], |r| r.get(0)).unwrap();
            assert_eq!(back, *s);
        }
        let bad = conn.one("SELECT 'in_fligth'", args![], |r| r.get::<ItemState>(0));
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("unknown ItemState 'in_fligth'")
        );
    }

    #[test]
    fn every_output_name_of_a_state() {
        assert_eq!(Status::of(ItemState::InFlight, false).as_str(), "in_doubt");
        assert_eq!(Status::of(ItemState::Succeeded, true), Status::Conflict);
        let done: Vec<_> = Status::ALL.iter().filter(|s| !s.needs_a_look()).collect();
        assert_eq!(done, [&Status::Succeeded, &Status::Skipped]);
    }
}
