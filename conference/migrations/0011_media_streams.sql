-- Stream participants (voice bots): their media stream as JSON, NULL for the others.
ALTER TABLE participants ADD COLUMN media_stream TEXT;
