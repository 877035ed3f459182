package messages

import "fmt"

// NewRaftMessage wraps a peer message body (one of RequestVote,
// RequestVoteResponse, AppendEntries, AppendEntriesResponse, TimeoutNow,
// ReadIndexRequest, ReadIndexResponse, InstallSnapshot,
// InstallSnapshotResponse) in its envelope. It panics on any
// other type: that is a programming error, never input from the network.
func NewRaftMessage(clusterID string, from, to, term uint64, body any) *RaftMessage {
	m := &RaftMessage{ClusterId: clusterID, From: from, To: to, Term: term}
	switch b := body.(type) {
	case *RequestVote:
		m.Body = &RaftMessage_RequestVote{RequestVote: b}
	case *RequestVoteResponse:
		m.Body = &RaftMessage_RequestVoteResponse{RequestVoteResponse: b}
	case *AppendEntries:
		m.Body = &RaftMessage_AppendEntries{AppendEntries: b}
	case *AppendEntriesResponse:
		m.Body = &RaftMessage_AppendEntriesResponse{AppendEntriesResponse: b}
	case *TimeoutNow:
		m.Body = &RaftMessage_TimeoutNow{TimeoutNow: b}
	case *ReadIndexRequest:
		m.Body = &RaftMessage_ReadIndexRequest{ReadIndexRequest: b}
	case *ReadIndexResponse:
		m.Body = &RaftMessage_ReadIndexResponse{ReadIndexResponse: b}
	case *InstallSnapshot:
		m.Body = &RaftMessage_InstallSnapshot{InstallSnapshot: b}
	case *InstallSnapshotResponse:
		m.Body = &RaftMessage_InstallSnapshotResponse{InstallSnapshotResponse: b}
	default:
		panic(fmt.Sprintf("messages: %T is not a peer message body", body))
	}
	return m
}
