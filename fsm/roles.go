package fsm

import (
	"fmt"
	"slices"

	pb "github.com/ketch-raft/ketch/messages"
)

// The role functions. Each handles the messages meaningful in its role, in
// the current term only: stepMessage has already settled terms (Raft §5.1)
// and dropped stale messages. Messages a role has no use for are ignored;
// they are leftovers of an earlier role in this term.

// stepFollower: Raft §5.2 and Figure 2, "Followers".
func (n *Node) stepFollower(m *pb.RaftMessage) {
	switch {
	case m.GetAppendEntries() != nil:
		// Figure 2: a follower's election timer restarts whenever it
		// hears from the current leader.
		n.leader = m.From
		n.resetElectionTimer()
		n.handleAppendEntries(m)
	case m.GetInstallSnapshot() != nil:
		// Raft §7: so does a chunk of its snapshot.
		n.leader = m.From
		n.resetElectionTimer()
		n.handleInstallSnapshot(m)
	case m.GetRequestVote() != nil:
		n.handleRequestVote(m)
	case m.GetTimeoutNow() != nil:
		// thesis §3.10: the leader hands over; start an election at once,
		// skipping the pre-vote. Only a voter can be elected, and only
		// this term's leader hands over.
		if n.isVoter() && m.From == n.leader {
			n.becomeCandidate(true)
		}
	}
}

// stepPreCandidate: thesis §9.6. The pre-candidate is still in its old
// term; the answers to its pre-vote are handled by handlePreVoteResponse.
func (n *Node) stepPreCandidate(m *pb.RaftMessage) {
	switch {
	case m.GetAppendEntries() != nil:
		// A leader of this term exists: stop asking.
		n.becomeFollower(n.term, m.From)
		n.handleAppendEntries(m)
	case m.GetInstallSnapshot() != nil:
		n.becomeFollower(n.term, m.From)
		n.handleInstallSnapshot(m)
	case m.GetRequestVote() != nil:
		n.handleRequestVote(m)
		if n.vote == m.From {
			n.becomeFollower(n.term, 0) // it voted for another candidate
		}
	case m.GetTimeoutNow() != nil:
		// Only from a member: a stranger's would start an election that
		// leader stickiness does not hold back.
		if n.isVoter() && member(n.config().Config, m.From) != nil {
			n.becomeCandidate(true)
		}
	}
}

// stepCandidate: Raft §5.2 and Figure 2, "Candidates".
func (n *Node) stepCandidate(m *pb.RaftMessage) {
	switch {
	case m.GetAppendEntries() != nil:
		// Raft §5.2: an AppendEntries from a leader of the same term
		// means the election was lost; return to follower.
		n.becomeFollower(n.term, m.From)
		n.handleAppendEntries(m)
	case m.GetInstallSnapshot() != nil:
		n.becomeFollower(n.term, m.From)
		n.handleInstallSnapshot(m)
	case m.GetRequestVote() != nil:
		n.handleRequestVote(m) // refused: this node voted for itself
	case m.GetRequestVoteResponse() != nil:
		if m.GetRequestVoteResponse().Granted {
			n.votes[m.From] = true
			n.maybeWin()
		}
	}
}

// stepLeader: Raft §5.3 and Figure 2, "Leaders".
func (n *Node) stepLeader(m *pb.RaftMessage) {
	switch {
	case m.GetRequestVote() != nil:
		n.handleRequestVote(m) // refused: this node voted for itself
	case m.GetAppendEntriesResponse() != nil:
		n.handleAppendResponse(m.From, m.GetAppendEntriesResponse())
	case m.GetInstallSnapshotResponse() != nil:
		n.handleSnapshotResponse(m.From, m.GetInstallSnapshotResponse())
	case m.GetAppendEntries() != nil, m.GetInstallSnapshot() != nil:
		// An AppendEntries (or snapshot) in the leader's own term would
		// mean two leaders in one term (Raft §5.2, Election Safety). It
		// cannot come from a correct peer: it is rejected, not trusted.
		n.reject(m.From, ErrImpossible, "an AppendEntries or InstallSnapshot of this leader's own term %d", m.Term)
	}
}

// maybeWin makes a candidate leader once a majority of the members,
// itself included, granted their votes (Raft §5.2).
func (n *Node) maybeWin() {
	if n.votes[n.id] && n.quorum.has(func(id uint64) bool { return n.votes[id] }) {
		n.becomeLeader()
	}
}

// handleRequestVote applies the RequestVote receiver rules (Raft §5.2,
// §5.4.1, Figure 2). The answer is held until the vote is durable.
func (n *Node) handleRequestVote(m *pb.RaftMessage) {
	rv := m.GetRequestVote()
	// Figure 2 RequestVote rule 2: vote if votedFor is null or the
	// candidate (each server votes at most once per term, Raft §5.2) ...
	canVote := n.vote == 0 || n.vote == m.From
	// ... and the candidate's log is at least as up-to-date as the
	// receiver's (Raft §5.4.1), so a leader holds every committed entry.
	upToDate := n.log.isUpToDate(rv.LastLogIndex, rv.LastLogTerm) || n.bug(bugVoteStaleLog)
	granted := canVote && upToDate
	if granted {
		n.vote = m.From
		n.hsDirty = true
		// Figure 2: granting a vote restarts the election timer.
		n.resetElectionTimer()
	}
	n.send(m.From, &pb.RequestVoteResponse{Granted: granted}, !(granted && n.bug(bugVoteNotPersisted)))
}

// handleAppendEntries applies the AppendEntries receiver rules (Raft §5.3,
// Figure 2). The answer is held until the appended entries are durable.
func (n *Node) handleAppendEntries(m *pb.RaftMessage) {
	ae := m.GetAppendEntries()
	prev, prevTerm, ents := ae.PrevLogIndex, ae.PrevLogTerm, ae.Entries
	// thesis §6.4: the answer echoes the read round, success or not: any
	// answer in this term tells the leader this node still follows it.
	resp := &pb.AppendEntriesResponse{RejectIndex: prev, ReadRound: ae.ReadRound}
	if floor := n.log.floor; prev < floor {
		// Raft §7: the entries through the floor are in this node's
		// snapshot, committed, so they match the leader's (Leader
		// Completeness); only what follows the floor is checked and merged.
		if skip := floor - prev; uint64(len(ents)) <= skip {
			prev += uint64(len(ents))
			prevTerm, ents = n.log.term(prev), nil
		} else {
			prev, prevTerm, ents = floor, ents[skip-1].Term, ents[skip:]
		}
	}

	switch {
	case prev < n.log.floor:
		// All of it is in the snapshot.
		resp.Success, resp.MatchIndex = true, prev
	case prev > n.log.lastIndex():
		// Figure 2 rule 2: reply false if the log has no entry at
		// prevLogIndex. Fast backtracking: say where the log ends.
		resp.ConflictIndex = n.log.lastIndex() + 1
	case n.log.term(prev) != prevTerm:
		// Figure 2 rule 2: ... or its term differs. Fast backtracking
		// (Raft §5.3, last paragraphs): report the conflicting term and
		// the first index this log holds for it, so the leader can skip
		// the whole term in one round trip.
		resp.ConflictTerm = n.log.term(prev)
		resp.ConflictIndex = n.log.firstIndexOfTerm(resp.ConflictTerm, prev)
	default:
		n.appendFromLeader(prev, ents)
		lastNew := prev + uint64(len(ents))
		// Figure 2 rule 5: commitIndex = min(leaderCommit, index of the
		// last new entry). Entries past lastNew may still be an old
		// leader's and must not be counted as committed.
		limit := lastNew
		if n.bug(bugCommitBeyondSent) {
			limit = n.log.lastIndex()
		}
		if c := min(ae.LeaderCommit, limit); c > n.commit {
			n.commit = c
		}
		resp.Success = true
		resp.MatchIndex = lastNew
	}
	resp.LastLogIndex = n.log.lastIndex()
	n.send(m.From, resp, !n.bug(bugAckBeforeDurable))
}

// appendFromLeader merges entries that follow prev, which is known to match
// the leader's log, into this log. Validation has made sure that none of
// them conflicts with a committed entry (contradictsCommitted).
func (n *Node) appendFromLeader(prev uint64, ents []*pb.Entry) {
	if n.bug(bugTruncateOnStale) && len(ents) > 0 {
		// The planted bug: replace everything after prev, conflict or
		// not, like a naive implementation without the guard below.
		n.log.truncateAndAppend(ents)
		n.markDirty(ents[0].Index)
		return
	}
	for i, e := range ents {
		if e.Index > n.log.lastIndex() {
			// Figure 2 rule 4: append any new entries not already in the log.
			n.log.append(ents[i:]...)
			n.markDirty(e.Index)
			return
		}
		if n.log.term(e.Index) != e.Term {
			// Figure 2 rule 3: an existing entry conflicts with a new one
			// (same index, different term): delete it and all that follow.
			// ARCHITECTURE §3 rule 4: only a real conflict truncates; a
			// stale or duplicated message whose entries we already hold
			// changes nothing.
			if e.Index <= n.commit {
				// Raft §5.4 (State Machine Safety): committed entries are
				// never overwritten. contradictsCommitted refuses every
				// message that would, so this is a bug of the fsm's own.
				panic(fmt.Sprintf("invariant: truncating committed entry %d (commit index %d) passed validation", e.Index, n.commit))
			}
			n.log.truncateAndAppend(ents[i:])
			n.markDirty(e.Index)
			return
		}
	}
}

// ------------------------------------------------------------- replication

// leaderAppend appends proposals to the leader's log and sends them to
// every follower ready for them. The leader may send before its own fsync
// (thesis §10.2.1); it counts itself only once durable.
func (n *Node) leaderAppend(ps []Proposal) {
	ents := make([]*pb.Entry, len(ps))
	for i, p := range ps {
		ents[i] = &pb.Entry{Type: pb.EntryType_ENTRY_TYPE_NORMAL, Data: p.Data}
	}
	n.appendEntries(ents...)
	for i, p := range ps {
		if p.ID != 0 {
			n.proposals = append(n.proposals, pendingProposal{index: ents[i].Index, id: p.ID})
			n.acts = append(n.acts, Proposed{ID: p.ID, Index: ents[i].Index, Term: ents[i].Term})
		}
	}
	for _, p := range n.peers {
		if pr := n.progress[p]; pr.state == stateReplicate {
			n.sendAppend(p)
		}
	}
}

// sendAppend sends follower p what it may receive now: in probe state one
// AppendEntries (if none is out); in replicate state as many as the
// in-flight window allows, each packed up to MaxMsgBytes.
func (n *Node) sendAppend(p uint64) {
	pr := n.progress[p]
	last := n.log.lastIndex()
	// A probe goes out even with no entries; a pipeline only with some.
	if pr.state == stateSnapshot {
		n.pumpSnapshot(p, pr)
		return
	}
	for n.canSend(pr) && (pr.state == stateProbe || pr.next <= last) {
		if pr.next <= n.log.floor {
			// Raft §7: the follower needs entries this node compacted
			// into its snapshot: send the snapshot.
			n.startSnapshot(p, pr)
			return
		}
		if pr.next <= n.log.offset {
			// The follower needs entries this node keeps only on disk: ask
			// the store for them (one read at a time); fetched sends them.
			if !pr.fetching {
				pr.fetching, pr.fetchRound = true, n.round
				n.acts = append(n.acts, Fetch{Peer: p, Term: n.term, Lo: pr.next, Hi: n.log.offset + 1, MaxBytes: n.cfg.MaxMsgBytes})
			}
			return
		}
		n.sendChunk(p, pr, n.log.sliceBytes(pr.next, last+1, n.cfg.MaxMsgBytes, n.cfg.Limits.MaxEntriesPerMessage))
	}
}

// canSend reports whether flow control lets the leader send follower pr
// another AppendEntries: in probe state when no probe is out, in
// replicate state while the in-flight window has room.
func (n *Node) canSend(pr *progress) bool {
	if pr.state == stateReplicate {
		return len(pr.inflight) < n.cfg.MaxInflight
	}
	return !pr.probeSent
}

// sendChunk sends follower p the entries that start at its next index
// and records it in its progress: a probe is out, or the pipeline
// advanced by one message.
func (n *Node) sendChunk(p uint64, pr *progress, ents []*pb.Entry) {
	n.sendEntries(p, pr.next-1, ents)
	if pr.state == stateProbe {
		pr.probeSent = true
		return
	}
	if len(pr.inflight) == 0 {
		pr.stallRound = n.round
	}
	pr.next += uint64(len(ents))
	pr.inflight = append(pr.inflight, pr.next-1)
}

// fetched sends a follower the entries a Fetch read from the store, as
// sendAppend would have had they been in memory, and carries on. A stale
// answer (another term, or the follower's next index has moved) is
// dropped, and sendAppend decides again what the follower needs.
func (n *Node) fetched(f Fetched) {
	pr := n.progress[f.Peer]
	if n.role != Leader || f.Term != n.term || pr == nil || !pr.fetching {
		return
	}
	pr.fetching = false
	ents := f.Entries
	if len(ents) > 0 && ents[0].Index == f.Lo && f.Lo == pr.next && f.Lo > n.log.floor {
		// Only what is still compacted: newer entries come from memory.
		// The store bounds what it reads by bytes; the message's own
		// bounds apply too.
		ents = limitEntries(ents, n.cfg.MaxMsgBytes, n.cfg.Limits.MaxEntriesPerMessage)
		for k, e := range ents {
			if e.Index != f.Lo+uint64(k) || e.Index > n.log.offset {
				ents = ents[:k]
				break
			}
			if e.Term != n.log.term(e.Index) {
				panic(fmt.Sprintf("invariant: the store returned entry %d of term %d where the log has term %d", e.Index, e.Term, n.log.term(e.Index)))
			}
		}
		if len(ents) > 0 && n.canSend(pr) {
			n.sendChunk(f.Peer, pr, ents)
		}
	}
	n.sendAppend(f.Peer)
}

// sendEmpty sends follower p an empty AppendEntries at its match index (a
// heartbeat or a read round). Below the floor this leader no longer knows
// the terms, so it is sent at the floor: a follower that lacks it rejects
// it, and is sent the snapshot.
func (n *Node) sendEmpty(p uint64) {
	n.sendEntries(p, max(n.progress[p].match, n.log.floor), nil)
}

func (n *Node) sendEntries(p, prev uint64, ents []*pb.Entry) {
	n.send(p, &pb.AppendEntries{
		PrevLogIndex: prev,
		PrevLogTerm:  n.log.term(prev),
		Entries:      ents,
		LeaderCommit: n.commit,
		ReadRound:    n.readRound,
	}, false)
}

// heartbeat runs every HeartbeatInterval on the leader (Raft §5.2): every
// follower hears from it, probes are retried, and a pipeline that made no
// progress for RetransmitRounds is assumed lost and restarted as a probe.
func (n *Node) heartbeat() {
	n.round++
	if n.leaseOn() {
		// thesis §6.4.1: every timed heartbeat is a read round, so its
		// echoes extend the lease from the time it was sent.
		n.readRound++
		n.noteRound()
	}
	last := n.log.lastIndex()
	n.catchUpTick()
	for _, p := range n.peers {
		pr := n.progress[p]
		if pr.fetching && n.round-pr.fetchRound >= uint64(n.cfg.RetransmitRounds) {
			pr.fetching = false // the Fetch or its answer was lost
		}
		switch {
		case pr.state == stateSnapshot:
			n.snapshotTick(p, pr)
		case pr.state == stateProbe:
			pr.probeSent = false // the probe or its answer may be lost
			n.sendAppend(p)
		case pr.match < last && len(pr.inflight) > 0 && n.round-pr.stallRound >= uint64(n.cfg.RetransmitRounds):
			pr.becomeProbe(pr.match + 1)
			n.sendAppend(p)
		default:
			// An empty AppendEntries at the known match point cannot be
			// rejected by a live follower, and lets it learn the commit
			// index up to what it holds.
			n.sendEmpty(p)
		}
	}
	n.setTimer(HeartbeatTimer, n.cfg.HeartbeatInterval)
}

// handleAppendResponse updates a follower's progress (Raft §5.3).
func (n *Node) handleAppendResponse(from uint64, r *pb.AppendEntriesResponse) {
	pr := n.progress[from]
	if pr == nil {
		return
	}
	// thesis §6.2 (check-quorum) and §6.4 (ReadIndex): any answer in this
	// term shows the follower still recognizes this leader.
	pr.active, pr.heard = true, n.round
	pr.readAck = max(pr.readAck, min(r.ReadRound, n.readRound))
	switch {
	case r.Success && r.MatchIndex > n.log.lastIndex():
		n.reject(from, ErrImpossible, "acknowledges index %d, but this leader's log ends at %d", r.MatchIndex, n.log.lastIndex())
		return
	case !r.Success && r.ConflictIndex != 0 && r.RejectIndex > n.log.lastIndex():
		// This leader never sent an AppendEntries in its term whose prev is
		// past its log; believing it would move next past the log for good.
		n.reject(from, ErrImpossible, "rejects index %d, but this leader's log ends at %d", r.RejectIndex, n.log.lastIndex())
		return
	}
	if pr.state == stateSnapshot {
		// An answer to an AppendEntries sent before the transfer began.
		// One that shows the follower holds the log through the floor
		// makes the snapshot unnecessary.
		if r.Success && r.MatchIndex >= n.log.floor {
			pr.match = max(pr.match, r.MatchIndex)
			n.endSnapshot(from, pr, pr.match+1)
			n.maybeCommit()
			n.sendAppend(from)
		}
		return
	}
	if r.Success {
		if r.MatchIndex > pr.match {
			pr.match = r.MatchIndex
			pr.stallRound = n.round
			pr.ack(r.MatchIndex)
			pr.next = max(pr.next, pr.match+1)
			n.maybeCommit()
		}
		if from == n.transferee && pr.match == n.log.lastIndex() {
			// thesis §3.10: the target's log is up to date.
			n.sendTimeoutNow(from)
			if n.role != Leader {
				return // a removed leader stepped down as it handed over
			}
		}
		// The answer to a probe shows where the logs match: switch to
		// pipelining from there.
		if pr.state == stateProbe && r.MatchIndex+1 >= pr.next {
			pr.match = max(pr.match, r.MatchIndex)
			pr.becomeReplicate()
		}
		n.sendAppend(from)
		return
	}
	if r.ConflictIndex == 0 {
		// The answer to an AppendEntries of a term the follower had left
		// (Raft §5.1, see stepMessage): it carries the follower's term and
		// nothing about its log. This leader may be in that very term and
		// have sent the message in an earlier one; there is nothing to
		// learn from it.
		return
	}
	// A rejection at the very point the follower acknowledged, from a log
	// that now ends before it: the follower lost entries it had made
	// durable (its data dir was replaced or restored from an older copy,
	// after corruption). Raft assumes that never happens, and the rule
	// below would ignore the rejection forever: the follower would never
	// be caught up. Probe it again from where its log ends. Forgetting
	// part of its match can only delay commits (the commit index never
	// decreases). Honest traffic can look like this too (in a pipeline,
	// a rejection of a later message that overtook an earlier one, or a
	// duplicate, arriving after the acknowledgement), and then it costs
	// one probe round.
	if r.RejectIndex == pr.match && r.ConflictTerm == 0 && r.LastLogIndex < pr.match {
		pr.match = r.LastLogIndex
		pr.becomeProbe(r.LastLogIndex + 1)
		n.sendAppend(from)
		return
	}
	// A rejection. Ignore it when stale (ARCHITECTURE §3 rule 5): it
	// answers a probe other than the current one, or a point at or below
	// what the follower has already matched.
	if r.RejectIndex <= pr.match || (pr.state == stateProbe && r.RejectIndex != pr.next-1) {
		return
	}
	// Raft §5.3: decrement nextIndex and retry; with fast backtracking
	// jump over the follower's conflicting term at once. If this log holds
	// the conflicting term, the logs may match up to its last entry of
	// that term; otherwise skip everything the follower has of that term.
	next := r.ConflictIndex
	if r.ConflictTerm != 0 {
		if i := n.log.lastIndexOfTerm(r.ConflictTerm, r.RejectIndex); i != 0 {
			next = i + 1
		}
	}
	next = max(min(next, r.RejectIndex), pr.match+1)
	pr.becomeProbe(next)
	n.sendAppend(from)
}

// maybeCommit advances the commit index to the highest index a majority
// holds durably, if that entry is of the current term (Raft §5.3, §5.4.2).
func (n *Node) maybeCommit() {
	q := n.quorum
	if n.bug(bugLearnerCounts) {
		// The planted bug: learners count toward commit like voters.
		for _, m := range n.config().Config.Members {
			if m.Role == pb.MemberRole_MEMBER_ROLE_LEARNER {
				q.in = append(q.in, m.Id)
			}
		}
		slices.Sort(q.in)
	}
	// The quorum index: the largest index held by a majority (of each
	// configuration, during a joint change). ARCHITECTURE §3 rule 2: the
	// leader counts for what it made durable, and only if it votes.
	idx := q.index(func(id uint64) uint64 {
		if id == n.id {
			return n.durable
		}
		if pr := n.progress[id]; pr != nil {
			return pr.match
		}
		return 0
	})
	if idx <= n.commit {
		return
	}
	// Raft §5.4.2 (Figure 8): a leader never commits an entry of an
	// earlier term by counting replicas; it commits its own term's entry,
	// and the earlier ones with it by the Log Matching Property.
	if n.log.term(idx) != n.term && !n.bug(bugCommitOldTerm) {
		return
	}
	for _, e := range n.log.slice(n.commit+1, idx+1) {
		if e.Term == n.term {
			n.uncommitted -= entrySize(e.Data)
		}
	}
	n.commit = idx
}
