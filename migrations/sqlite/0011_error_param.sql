-- The request parameter a provider's error blamed (OpenAI's error.param, the first field of a
-- Gemini google.rpc.BadRequest), kept beside error_kind and error so the API can hand it on
-- in OpenAI's error object, whichever process ran the job. NULL when none was named, as for
-- every job failed before this migration.
ALTER TABLE jobs ADD COLUMN error_param TEXT;
