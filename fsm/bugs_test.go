//go:build ketchbugs

package fsm

// The seeded bugs of bugs.go, each against the rule test it breaks.
// CONVENTIONS: "A test must be able to fail." Each check below is the
// assertion of a rule test (its "representative" case, built by the same
// helper); it must hold on the clean fsm and fail with the bug planted.

import (
	"math"
	"slices"
	"testing"
)

// ruleChecks maps each seeded bug to the rule it breaks: a check that
// returns the violations it observes (none when the rule holds), and how
// many it must observe with the bug planted.
var ruleChecks = map[string]struct {
	rule  string
	check func(t *testing.T, cfg Config) []string
	want  int
}{
	"commit-old-term": {
		"TestLeaderNeverCommitsEarlierTermEntryByCountingReplicas (Raft §5.4.2, Figure 8)",
		func(t *testing.T, cfg Config) []string {
			if c := figure8Leader(t, cfg).Status().Commit; c != 0 {
				return []string{"committed index " + itoa(c) + " of an earlier term by counting replicas"}
			}
			return nil
		}, 1,
	},
	"vote-not-persisted": {
		"TestGrantedVoteHeldUntilPersisted (ARCHITECTURE §3 rule 1, Raft Figure 2)",
		func(t *testing.T, cfg Config) []string {
			asked, _ := heldVote(t, cfg, 2)
			var v []string
			if len(sent(asked)) != 0 {
				v = append(v, "grant sent before Persisted")
			}
			if hs := onlyPersist(t, asked).HardState; hs == nil || hs.Vote != 2 {
				v = append(v, "vote missing from the persisted hard state")
			}
			return v
		}, 2,
	},
	"vote-stale-log": {
		"TestVoteOnlyForUpToDateLog (Raft §5.4.1)",
		func(t *testing.T, cfg Config) []string {
			if granted, _ := upToDateVote(t, cfg, 2, 2); granted {
				return []string{"granted a vote to a candidate with a shorter log of the same last term"}
			}
			return nil
		}, 1,
	},
	"truncate-on-stale": {
		"TestFollowerDoesNotTruncateOnDuplicateAppendEntries (ARCHITECTURE §3 rule 4)",
		func(t *testing.T, cfg Config) []string {
			n, acts := staleAppend(t, cfg)
			var v []string
			if len(actionsOf[Persist](acts)) != 0 {
				v = append(v, "a duplicate AppendEntries persisted entries")
			}
			if got := logTerms(n); !slices.Equal(got, []uint64{1, 1, 2, 2}) {
				v = append(v, "a duplicate AppendEntries truncated the log")
			}
			return v
		}, 2,
	},
	"commit-beyond-sent": {
		"TestFollowerCommitIsMinOfLeaderCommitAndLastNewEntry (Raft Figure 2, AppendEntries rule 5)",
		func(t *testing.T, cfg Config) []string {
			if n, _ := commitBeyondSent(t, cfg); n.Status().Commit != 2 {
				return []string{"committed index " + itoa(n.Status().Commit) + " past the last entry the leader's message covered"}
			}
			return nil
		}, 1,
	},
	"ack-before-durable": {
		"TestFollowerAppendsAndAcksOnlyWhenDurable (ARCHITECTURE §3 rule 1)",
		func(t *testing.T, cfg Config) []string {
			appended, persisted := heldAck(t, cfg)
			var v []string
			if m, _ := appendAnswer(t, appended); m != nil {
				v = append(v, "acknowledged entries before Persisted")
			}
			if _, r := appendAnswer(t, slices.Concat(appended, persisted)); !r.GetSuccess() || r.GetMatchIndex() != 3 {
				v = append(v, "never acknowledged the entries")
			}
			return v
		}, 1,
	},
	"read-before-noop": {
		"TestReadIndexWaitsForNoop (thesis §6.4 step 1)",
		func(t *testing.T, cfg Config) []string { return readBeforeNoop(t, cfg) }, 1,
	},
	"read-without-quorum": {
		"TestReadIndexNeedsQuorumConfirmation (thesis §6.4 step 2)",
		func(t *testing.T, cfg Config) []string { return readWithoutQuorum(t, cfg) }, 1,
	},
	"prevote-bumps-term": {
		"TestPreVoteChangesNoTerm (thesis §9.6)",
		func(t *testing.T, cfg Config) []string { return preVoteBumps(t, cfg) }, 2,
	},
	"follower-read-unapplied": {
		"TestFollowerServesReadOnceApplied (thesis §6.4, last paragraph)",
		func(t *testing.T, cfg Config) []string { return followerReadUnapplied(t, cfg) }, 1,
	},
	"unchecked-messages": {
		"TestMalformedMessagesAreRejected (validate.go)",
		func(t *testing.T, cfg Config) []string {
			n := newNode(t, cfg, restoreLog(2, 0, 1))
			if len(actionsOf[Rejected](n.Step(appendAck(2, 1, math.MaxUint64, 0)))) == 0 {
				return []string{"a term of 2^64-1 was not rejected"}
			}
			return nil
		}, 1,
	},
	"snapshot-discards-tail": {
		"TestInstallDiscardsALogThatDisagrees (Raft Figure 13 rule 7)",
		func(t *testing.T, cfg Config) []string { _, v := installOverAConflict(t, cfg); return v }, 2,
	},
	"compact-unapplied": {
		"TestCompactionNeverPassesWhatTheStateApplied (Raft §7)",
		func(t *testing.T, cfg Config) []string { _, v := compactBehindTheState(t, cfg); return v }, 1,
	},
	"install-stale-snapshot": {
		"TestStaleSnapshotIsAnsweredWithTheMatch (Raft Figure 13, a snapshot no newer than the commit)",
		func(t *testing.T, cfg Config) []string { return staleSnapshot(t, cfg) }, 2,
	},
	"snapshot-chunk-unchecked": {
		"TestFollowerStagesChunksInOrder (Raft Figure 13 rules 2-4)",
		func(t *testing.T, cfg Config) []string { return gapChunk(t, cfg) }, 2,
	},
	"config-no-term-barrier": {
		"TestChangeWaitsForTheLeadersTermToCommit (Ongaro, raft-dev 2015)",
		func(t *testing.T, cfg Config) []string { return termBarrier(t, cfg) }, 1,
	},
	"two-changes-inflight": {
		"TestOneChangeAtATime (thesis §4.1)",
		func(t *testing.T, cfg Config) []string { return twoChanges(t, cfg) }, 1,
	},
	"learner-counts": {
		"TestLearnersDoNotCountForCommit (thesis §4.2.1)",
		func(t *testing.T, cfg Config) []string { return learnerCounts(t, cfg) }, 1,
	},
	"config-no-revert": {
		"TestConfigurationIsTheLatestInTheLogAndRevertsOnTruncation (thesis §4.1)",
		func(t *testing.T, cfg Config) []string { _, v := configRevert(t, cfg); return v }, 1,
	},
	"lease-from-check": {
		"TestLeaseCountsFromSending (thesis §6.4.1)",
		func(t *testing.T, cfg Config) []string { return leaseFromCheck(t, cfg) }, 1,
	},
}

// bugs.go: "a checker that never fails proves nothing". Every seeded bug
// makes the assertion of the rule test it names fail, and every rule check
// passes on the clean fsm; a bug added to bugs.go without a check here fails
// this test.
func TestSeededBugsBreakTheirRule(t *testing.T) {
	for _, name := range BugNames() {
		t.Run(name, func(t *testing.T) {
			rc, ok := ruleChecks[name]
			if !ok {
				t.Fatalf("seeded bug %q has no rule check here: add one", name)
			}
			if v := rc.check(t, testConfig(1)); len(v) != 0 {
				t.Fatalf("%s fails without the bug: %v", rc.rule, v)
			}
			v := rc.check(t, plant(t, testConfig(1), name))
			if len(v) != rc.want {
				t.Fatalf("with %s planted, %s observed %v, want %d violations", name, rc.rule, v, rc.want)
			}
			t.Logf("%s breaks %s: %v", name, rc.rule, v)
		})
	}
	if len(ruleChecks) != len(BugNames()) {
		t.Fatalf("%d rule checks for %d seeded bugs %v", len(ruleChecks), len(BugNames()), BugNames())
	}
}

// PlantBug knows exactly the names BugNames lists, and each sets its own
// switch.
func TestPlantBug(t *testing.T) {
	seen := bugSet(0)
	for _, name := range BugNames() {
		var cfg Config
		if err := PlantBug(&cfg, name); err != nil {
			t.Fatalf("PlantBug(%q): %v", name, err)
		}
		if cfg.bugs == 0 || cfg.bugs&seen != 0 || cfg.bugs&(cfg.bugs-1) != 0 {
			t.Fatalf("PlantBug(%q) set %b, want one new switch (seen %b)", name, cfg.bugs, seen)
		}
		seen |= cfg.bugs
	}
	var cfg Config
	if err := PlantBug(&cfg, "no-such-bug"); err == nil || cfg.bugs != 0 {
		t.Fatalf("PlantBug of an unknown name: %v, bugs %b", err, cfg.bugs)
	}
}

// plant returns cfg with the named seeded bug planted ("" plants none).
func plant(t *testing.T, cfg Config, bug string) Config {
	t.Helper()
	if bug == "" {
		return cfg
	}
	if err := PlantBug(&cfg, bug); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// readWithoutQuorum is the rule check of read-without-quorum.
func readWithoutQuorum(t *testing.T, cfg Config) []string {
	t.Helper()
	n := readLeader(t, cfg)
	if r := readsReady(n.Step(ReadIndex{IDs: []uint64{1}})); len(r) != 0 {
		return []string{"served a read before a quorum confirmed the leadership"}
	}
	return nil
}
