-- A full sync's raw stamp of a user row (core::plan::raw_stamp): a hash of the
-- directory entry the row was mapped from, tied to the row's digest. A full
-- sync that reads the same entry again knows the user is unchanged without
-- mapping it. NULL: not known (written by anything but a full sync, or before
-- this step); such users are mapped as before.
ALTER TABLE users ADD COLUMN raw_stamp TEXT;
