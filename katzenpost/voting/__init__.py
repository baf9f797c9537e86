"""The voting directory authority protocol (Katzenpost voting authority v0.0.15, 2021 suite):
pure, deterministic functions shared by the voting authority daemon
(`katzenpost.authority.voting`) and the nodes' and clients' voting PKI client. No I/O, no
clock, no key files: times, keys and the stored tables are arguments. Imports only
`katzenpost.pki` (and the base modules). Every exception derives from
`errors.VotingError` (a ValueError).

API summary
-----------
`rand`:      DeterministicRand(key32) with .read(n), .int63(), .int31n(n), .perm(n) — Go
             math/rand over the ChaCha20 keystream.
`srv`:       commit_and_reveal(epoch, rn32) -> (commit, reveal); make_reveal, make_commit;
             sign_reveal(identity_private, reveal, expiration, now) -> cert bytes;
             reveal_expiration(clock, now) (end of the current epoch);
             open_signed_reveal(raw, signer_pk, now) -> (epoch, payload)  [RevealError];
             check_reveal(reveal, commit)  [RevealError]; valid_reveals(commits, reveals);
             shared_random_value(epoch, commits{pk: commit}, reveals{pk: reveal}, prev_srv|None)
             [SharedRandomError when no votes];
             next_prior_shared_random(epoch, genesis, srv, prior, period);
             genesis_for_vote(genesis, prior, previous_doc|None, voting_epoch) -> (genesis, prior).
`topology`:  build_topology(mixes, layers, key32, previous_topology|None); random_topology,
             continuity_topology (leftovers in the order given, ascending pk; Go's is random).
`vote`:      VotingParameters.of(obj) (the 11 tallied fields; .tally_key());
             build_vote(epoch, descriptors, parameters, commit, *, genesis_epoch,
             prior_shared_random (None -> null), layers, previous=None) -> Document;
             sign_vote(identity_private, doc, now, period) -> cert bytes  [VoteError];
             parse_vote(raw, signer_pk, now) -> Document  [VoteError]  (receipt check);
             vote_commit(raw) -> commit|None; certificate_lifetime(period) = 3P + 600.
`tally`:     authority_threshold(N), dissent_bound(N), client_threshold(n), fetch_threshold(N);
             tally_votes(epoch, votes{pk: raw}, reveals{pk: reveal}, N, now) -> TallyResult
             (.entries, .parameters, .counted, .skipped)  [TallyError].
`consensus`: consensus_expiration(voting_epoch, clock) (schedule-derived, not the clock);
             tabulate(epoch, votes, reveals, *, identity_private, n_authorities, layers,
             genesis_epoch, prior_shared_random, previous, expiration, period, now)
             -> Tabulation(.srv, .prior_shared_random, .document, .certificate, .error)
             [SharedRandomError]; build_consensus(...) -> Document; sign_consensus(...);
             add_peer_signature(base, peer_cert, peer_pk, now)  [ConsensusError];
             combine_signatures(epoch, certificates{pk: raw}, verifiers, now, prefer)
             -> AcceptedConsensus(.raw, .document, .good, .bad)  [ConsensusError];
             verify_consensus(raw, verifiers, threshold, epoch|None, now) -> AcceptedConsensus
             (node/client acceptance with client_threshold(len(verifiers)); None = any
             epoch, for a cached document)  [ConsensusError].

Documents encode with `Document.to_json()` (katzenpost.pki.document); Vote and Reveal commands
are `katzenpost.wire.commands.Vote` / `Reveal` with these certificates as payload.
"""
