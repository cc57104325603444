-- Commands waiting for a second person's signature (issue 16's two-person rule): the first
-- signer proposes, the second sees it here and co-signs it. Keyed by the command's id.
CREATE TABLE proposals (
    id          text PRIMARY KEY,
    doc         text NOT NULL,
    signatures  integer NOT NULL,
    proposed_at timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
