-- The rooms a key may subscribe and publish to: a JSON array of name
-- patterns (`*` matches any run of characters); NULL means every room, an
-- empty array none.
ALTER TABLE virtual_keys ADD COLUMN rooms TEXT;
