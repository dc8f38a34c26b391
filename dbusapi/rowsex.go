package dbusapi

import (
	"context"
	"errors"
	"fmt"

	"github.com/godbus/dbus/v5"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// jobRowEx is one job of ListJobsPagedEx: ListJobsPaged's row, whose
// signature never changes, followed by the properties that came after it
// and that a list needs (Host: which machine of a fleet runs the job).
// Named like systemd's ...Ex methods. Attempts and Warnings stay out: they
// are read with GetJob.
type jobRowEx struct {
	Path        dbus.ObjectPath
	ID          string
	Name        string
	Batch       string
	Manifest    string
	State       string
	Stage       string
	Progress    int32
	StatusText  string
	Unit        string
	SubmittedBy int64
	Priority    int32
	CreatedAt   uint64
	StartedAt   uint64
	FinishedAt  uint64
	Error       string
	ErrorStage  string
	Outputs     []string
	ReportPath  string
	BytesDone   uint64
	BytesTotal  uint64
	Host        string
}

// rowExOf is j at path p as a ListJobsPagedEx row.
func rowExOf(p dbus.ObjectPath, j jobs.Job) jobRowEx {
	r := rowOf(p, j)
	return jobRowEx{r.Path, r.ID, r.Name, r.Batch, r.Manifest, r.State, r.Stage, r.Progress, r.StatusText, r.Unit,
		r.SubmittedBy, r.Priority, r.CreatedAt, r.StartedAt, r.FinishedAt, r.Error, r.ErrorStage, r.Outputs,
		r.ReportPath, r.BytesDone, r.BytesTotal, j.Host}
}

// rowsEx is list as ListJobsPagedEx answers it (see rows).
func (s *Server) rowsEx(list []jobs.Job, v viewer) []jobRowEx {
	out := make([]jobRowEx, len(list))
	for i, j := range list {
		p, known := s.ensureJob(j)
		out[i] = rowExOf(p, v.show(known))
	}
	return out
}

// rowsExOf reads a decoded ListJobsPagedEx reply with type assertions, as
// rowsOf does ListJobsPaged's: the rows and each one's host.
func rowsExOf(body []any) (rows []jobRow, hosts []string, total uint32, ok bool) {
	if len(body) != 2 {
		return nil, nil, 0, false
	}
	list, ok1 := body[0].([][]any)
	total, ok2 := body[1].(uint32)
	if !ok1 || !ok2 {
		return nil, nil, 0, false
	}
	short := make([][]any, len(list))
	hosts = make([]string, len(list))
	for i, f := range list {
		if len(f) != 22 || !as(f[21], &hosts[i]) {
			return nil, nil, 0, false
		}
		short[i] = f[:21]
	}
	rows, _, ok = rowsOf([]any{short, total})
	return rows, hosts, total, ok
}

// errUnknownMethod is what the bus answers for a method the agent lacks.
const errUnknownMethod = "org.freedesktop.DBus.Error.UnknownMethod"

// listJobsPageEx is ListJobsPagedEx; ok is false when the agent is older
// and lacks it (the caller then uses ListJobsPaged).
func (c *Client) listJobsPageEx(ctx context.Context, f apitype.Filter, p apitype.Page) (list []jobs.Job, total int, ok bool, err error) {
	if c == nil || c.conn == nil {
		return nil, 0, false, nil
	}
	call := c.send(ctx, ManagerPath, ManagerIface+".ListJobsPagedEx", 0, filterDict(f, p))
	if call.Err != nil {
		var de dbus.Error
		if errors.As(call.Err, &de) && de.Name == errUnknownMethod {
			return nil, 0, false, nil
		}
		return nil, 0, true, fromDBusError("list jobs", call.Err)
	}
	rows, hosts, n, good := rowsExOf(call.Body)
	if !good {
		return nil, 0, true, fmt.Errorf("list jobs: unexpected reply %s", call.Body)
	}
	list = make([]jobs.Job, len(rows))
	for i, r := range rows {
		list[i] = r.job()
		list[i].Host = hosts[i]
	}
	return list, int(n), true, nil
}
