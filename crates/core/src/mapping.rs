//! Attribute mapping: directory entry -> MFA user fields.
