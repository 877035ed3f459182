package sim

import (
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestCloneMsgCopiesEveryField fills every field of a RaftMessage, for
// each member of its body oneof, and requires cloneMsg to return an equal
// message that shares nothing with the original. It fails when a field is
// added to the protocol but not to cloneMsg.
func TestCloneMsgCopiesEveryField(t *testing.T) {
	bodies := (&pb.RaftMessage{}).ProtoReflect().Descriptor().Oneofs().ByName("body").Fields()
	for pick := range bodies.Len() {
		orig := &pb.RaftMessage{}
		fill(t, orig.ProtoReflect(), pick)
		c := cloneMsg(orig)
		if !proto.Equal(orig, c) {
			t.Errorf("%s: cloneMsg(%v) = %v", bodies.Get(pick).Name(), orig, c)
		}
		if ae := orig.GetAppendEntries(); ae != nil {
			ce := c.GetAppendEntries()
			if ce == ae || &ce.Entries[0] == &ae.Entries[0] || ce.Entries[0] == ae.Entries[0] || &ce.Entries[0].Data[0] == &ae.Entries[0].Data[0] {
				t.Error("the clone of an AppendEntries shares memory with the original")
			}
		}
	}
}

// fill sets every field of m, recursively, to a value other than the
// default; of each oneof it sets member number pick.
func fill(t *testing.T, m protoreflect.Message, pick int) {
	t.Helper()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() && od.Fields().Get(pick%od.Fields().Len()) != fd {
			continue
		}
		switch {
		case fd.IsMap():
			t.Fatalf("field %s is a map: teach fill and cloneMsg about it", fd.FullName())
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range 2 {
				if fd.Kind() == protoreflect.MessageKind {
					v := l.NewElement()
					fill(t, v.Message(), pick)
					l.Append(v)
				} else {
					l.Append(scalar(t, fd, i))
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			fill(t, m.Mutable(fd).Message(), pick)
		default:
			m.Set(fd, scalar(t, fd, i))
		}
	}
}

func scalar(t *testing.T, fd protoreflect.FieldDescriptor, i int) protoreflect.Value {
	t.Helper()
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString("s")
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte{1, 2, 3})
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vals.Get(vals.Len() - 1).Number())
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(100 + i))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(100 + i))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(100 + i))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(100 + i))
	}
	t.Fatalf("field %s has kind %v: teach fill about it", fd.FullName(), fd.Kind())
	return protoreflect.Value{}
}
