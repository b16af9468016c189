-- The events judged ``gap`` (their predecessor was not stored when they were):
-- each batch looks for those its new events settle. Without this index that
-- search read the whole events table at every batch (a parallel scan of every
-- chunk: 231 ms a batch at five years of 500 instruments); with it, a probe of
-- each chunk's index of the few events that are gaps (12 ms).
CREATE INDEX events_gap ON events (instrument_id, seq) WHERE verification = 'gap';
