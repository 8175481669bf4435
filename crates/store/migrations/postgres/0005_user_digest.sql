-- A digest of every synced field of a user (core::plan::digest), written with
-- each row: a full sync recognises unchanged users by it without reading their
-- rows. NULL for rows written before this step: the store fills them when it opens.
ALTER TABLE users ADD COLUMN digest TEXT;
