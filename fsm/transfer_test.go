package fsm

// Leadership transfer (thesis §3.10).

import (
	"errors"
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
)

// timeoutNowsTo counts the TimeoutNow messages to peer in acts.
func timeoutNowsTo(acts []Action, to uint64) int {
	k := 0
	for _, m := range sentTo(acts, to) {
		if m.GetTimeoutNow() != nil {
			k++
		}
	}
	return k
}

// thesis §3.10: "1. The prior leader stops accepting new client requests.
// 2. The prior leader fully updates the target server's log to match its
// own ... 3. The prior leader sends a TimeoutNow request to the target
// server." With target 0 the leader picks the most up-to-date voter.
func TestTransferLeadershipToUpToDateTarget(t *testing.T) {
	tests := []struct {
		name   string
		to     uint64
		acks   []uint64 // peers that acknowledged the whole log (index 2)
		target uint64
		now    bool // TimeoutNow at once
	}{
		{"named, up to date", 2, []uint64{2}, 2, true},
		{"named, lagging", 3, []uint64{2}, 3, false},
		{"most up to date", 0, []uint64{3}, 3, true},
		{"most up to date, all lagging", 0, nil, 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := nodeInRole(t, testConfig(1), Leader)
			for _, p := range tt.acks {
				stepSettled(t, n, appendAck(p, 1, 3, 2))
			}
			acts := n.Step(TransferLeadership{To: tt.to})
			if st := n.Status(); st.Transferee != tt.target || st.Role != Leader {
				t.Fatalf("status %+v, want leader transferring to %d", st, tt.target)
			}
			if got := timeoutNowsTo(acts, tt.target); (got == 1) != tt.now {
				t.Fatalf("actions %v: %d TimeoutNow to %d, want at once: %v", describe(acts), got, tt.target, tt.now)
			}
			// Step 1: proposals are refused while the transfer runs.
			r := actionsOf[Reply](n.Step(Propose{Proposals: []Proposal{{ID: 9, Data: []byte("x")}}}))
			if len(r) != 1 || !errors.Is(r[0].Err, ErrTransferring) || r[0].Leader != tt.target || n.log.lastIndex() != 2 {
				t.Fatalf("proposal answered %v (log ends at %d), want ErrTransferring with hint %d", r, n.log.lastIndex(), tt.target)
			}
			if !tt.now {
				// Step 2-3: once the target has the whole log, TimeoutNow.
				if got := timeoutNowsTo(stepSettled(t, n, appendAck(tt.target, 1, 3, 1)), tt.target); got != 0 {
					t.Fatal("TimeoutNow sent before the target caught up")
				}
				if got := timeoutNowsTo(stepSettled(t, n, appendAck(tt.target, 1, 3, 2)), tt.target); got != 1 {
					t.Fatal("no TimeoutNow once the target caught up")
				}
			}
		})
	}
}

// thesis §3.10: "Upon receiving TimeoutNow, the target server starts a new
// election" at once, without a pre-vote, and its RequestVotes say so, so
// that voters who heard from the old leader (leader stickiness, §4.2.3)
// still grant.
func TestTimeoutNowStartsElectionAtOnce(t *testing.T) {
	n := newNode(t, extConfig(2), restoreLog(3, 0, 1))
	stepSettled(t, n, appendMsg(1, 2, 3, 1, 1, 1))
	acts := stepSettled(t, n, Message{Msg: raftMsg(1, 2, 3, &pb.TimeoutNow{})})
	wantRoleTerm(t, n, Candidate, 4)
	k := 0
	for _, m := range sent(acts) {
		if rv := m.GetRequestVote(); rv != nil && rv.Transfer && !rv.PreVote && m.Term == 4 {
			k++
		}
	}
	if k != 2 {
		t.Fatalf("sent %v, want transfer RequestVotes at term 4 to both peers", describe(acts))
	}

	// A voter that heard from the old leader grants it.
	v := newNode(t, extConfig(3), restoreLog(3, 0, 1))
	stepSettled(t, v, appendMsg(1, 3, 3, 1, 1, 1))
	var rv *pb.RaftMessage
	for _, m := range sent(acts) {
		if m.To == 3 {
			rv = m
		}
	}
	if !voteAnswer(t, v, Message{Msg: rv}) {
		t.Fatal("the voter refused a transfer's RequestVote")
	}
}

// thesis §3.10: "If the transfer does not complete within about one
// election timeout, the prior leader aborts the transfer and resumes
// accepting client requests."
func TestTransferAbortsAfterElectionTimeout(t *testing.T) {
	for _, cfg := range []Config{testConfig(1), extConfig(1)} {
		name := "check-quorum off"
		if !cfg.DisableCheckQuorum {
			name = "check-quorum on"
		}
		t.Run(name, func(t *testing.T) {
			var n *Node
			if cfg.DisableCheckQuorum {
				n = nodeInRole(t, cfg, Leader)
			} else {
				n = extLeader(t, 1, 2, 3)
			}
			n.Step(TransferLeadership{To: 2})
			for tick := 0; n.Status().Transferee != 0; tick++ {
				if tick == 2 {
					t.Fatal("transfer still running after two election timeouts")
				}
				stepSettled(t, n, appendAck(2, 1, 3, 1)) // keeps check-quorum happy
				fireElection(t, n)
			}
			if n.role != Leader {
				t.Fatalf("role %v, want still leader", n.role)
			}
			if r := actionsOf[Reply](n.Step(Propose{Proposals: []Proposal{{ID: 9}}})); len(r) != 0 {
				t.Fatalf("proposal refused after the transfer ended: %v", r)
			}
		})
	}
}

// A transfer is a leader's business: anyone else ignores it, as does a
// leader asked to transfer to itself or a non-member.
func TestTransferIgnored(t *testing.T) {
	f := newNode(t, testConfig(1), restoreLog(2, 0, 1))
	if acts := f.Step(TransferLeadership{To: 2}); len(acts) != 0 || f.Status().Transferee != 0 {
		t.Fatalf("a follower acted on a transfer: %v", describe(acts))
	}
	for _, to := range []uint64{1, 9} {
		n := nodeInRole(t, testConfig(1), Leader)
		if acts := n.Step(TransferLeadership{To: to}); len(acts) != 0 || n.Status().Transferee != 0 {
			t.Fatalf("transfer to %d: %v", to, describe(acts))
		}
	}
}
