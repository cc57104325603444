-- Commands waiting for a second person's signature (issue 16's two-person rule): the first
-- signer proposes, the second sees it here and co-signs it. Keyed by the command's id.
CREATE TABLE proposals (
    id          TEXT PRIMARY KEY,
    doc         TEXT NOT NULL,
    signatures  INTEGER NOT NULL,
    proposed_at TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
