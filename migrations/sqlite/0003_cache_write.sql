-- Prompt-cache writes (Anthropic's cache_creation_input_tokens) are a token bucket of their
-- own with their own price, so a cost row keeps them apart like cached reads. input_tokens
-- still counts every prompt token (plain, cache reads and cache writes); rows from before this
-- migration had no writes.
ALTER TABLE costs ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE costs ADD COLUMN cache_write_price INTEGER NOT NULL DEFAULT 0;  -- micro-USD per million tokens
