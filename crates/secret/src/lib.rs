//! Secrets of the configuration, for the command line and the web portal
//! alike: the administrator's sealing key (`MFASYNC_SECRET_KEY_FILE` /
//! `MFASYNC_SECRET_KEY`, [`key`]), passwords sealed in the stored
//! configuration text ([`seal`]), and password files read only as the first
//! line of a regular file inside the operator's secrets directories
//! ([`file`]). Nothing here prints; secrets never appear in errors.

pub mod file;
pub mod key;
pub mod seal;

pub use file::{read_first_line, read_password_file, Refusal, SecretsDirs};
pub use key::{load_key, SecretKey, KEY_ENV, KEY_FILE_ENV, PREFIX};
pub use seal::{inline_passwords, reseal, seal_inline, seal_typed_config, Resealed};
