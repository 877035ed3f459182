package lincheck

import (
	"context"
	"errors"

	"github.com/ketch-raft/ketch/actors/client"
)

// Do runs op through ketch's Go client and records it as client number
// clientNum: Invoke just before the call, Complete with OutcomeOf(err) just
// after. It returns the result and the client's error (client.ErrNotFound
// for a Get of an absent key, which is an OK outcome).
func (r *Recorder) Do(ctx context.Context, c *client.Client, clientNum int, op Op) (Result, error) {
	id := r.Invoke(clientNum, op)
	var res Result
	var err error
	switch op.Kind {
	case KindPut:
		err = c.Put(ctx, op.Key, op.Value)
	case KindGet:
		res.Value, err = c.Get(ctx, op.Key)
		res.Found = err == nil
	case KindCAS:
		res.Swapped, res.Value, res.Found, err = c.CompareAndSwap(ctx, op.Key, op.Old, op.Value)
	case KindDelete:
		res.Found, err = c.Delete(ctx, op.Key)
	default:
		err = errors.Join(client.ErrInvalid, errors.New("lincheck: unknown operation kind "+op.Kind.String()))
	}
	r.Complete(id, res, OutcomeOf(err))
	return res, err
}
