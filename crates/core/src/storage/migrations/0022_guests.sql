-- Guest accounts (spec: "Guest Access"): registered with `kind=guest`, limited to the
-- endpoints the module lists, until upgraded to a full account.
ALTER TABLE users ADD COLUMN is_guest BIGINT NOT NULL DEFAULT 0;
