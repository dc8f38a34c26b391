package agent

import (
	"container/heap"

	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// pendingBefore is the order jobs start in: highest priority first, then
// the oldest file, then the oldest job, then the id.
func pendingBefore(a, b *record) bool {
	if a.Priority != b.Priority {
		return a.Priority > b.Priority
	}
	if !a.FileTime.Equal(b.FileTime) {
		return a.FileTime.Before(b.FileTime)
	}
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.Before(b.CreatedAt)
	}
	return a.ID < b.ID
}

// pendingQueue is what scheduleLocked picks the next job from, so that a unit
// change costs O(log P) with P jobs pending rather than a sort of them all.
//
// The pending jobs of each batch, and those of no batch, form a lane: a
// heap in pendingBefore order. The lanes that may start their first job
// are in a heap ordered by that job, so the next job to start is the
// first of the first lane. A batch at its concurrency is parked (taken
// out of that heap) until one of its jobs stops running; none of its
// jobs could start before, which is how the one-pass sort skipped them.
//
// Job states change all over the agent; the queue does not follow them.
// It finds out lazily: a job that is no longer pending when it comes
// first is dropped, and the jobs it started are looked at on every pick
// (refresh): one that stopped frees its batch, one put back to pending
// (requeueLocked) joins its lane again. The order keys of a pending job
// (Priority, FileTime, CreatedAt, ID) never change.
type pendingQueue struct {
	lanes   map[string]*lane
	open    laneHeap
	queued  map[*record]bool   // in a lane
	running map[string]*record // started by scheduleLocked (or found running)
	parked  []*lane            // batches at their concurrency
	built   bool
}

type lane struct {
	batch string
	jobs  recordHeap
	at    int // index in open; -1 when not in it
}

func newPendingQueue() *pendingQueue {
	return &pendingQueue{lanes: map[string]*lane{}, queued: map[*record]bool{}, running: map[string]*record{}}
}

// rebuild starts over from the store: every pending job queued, every
// running one known. scheduleLocked calls it once, after recovery.
func (q *pendingQueue) rebuild(all map[string]*record) {
	*q = *newPendingQueue()
	q.built = true
	for _, r := range all {
		switch r.State {
		case jobs.Pending:
			q.add(r)
		case jobs.Running:
			q.running[r.ID] = r
		}
	}
}

// add queues a pending job (again); a job already queued is left alone.
func (q *pendingQueue) add(r *record) {
	if q.queued[r] {
		return
	}
	q.queued[r] = true
	l := q.lanes[r.Batch]
	if l == nil {
		l = &lane{batch: r.Batch, at: -1}
		q.lanes[r.Batch] = l
	}
	heap.Push(&l.jobs, r)
	if l.at < 0 {
		heap.Push(&q.open, l)
	} else {
		heap.Fix(&q.open, l.at)
	}
}

// refresh looks at the jobs started before: those that stopped running
// leave the running set, those made pending again are queued. It returns
// how many run, and how many per batch.
func (q *pendingQueue) refresh(all map[string]*record) (int, map[string]int) {
	perBatch := map[string]int{}
	for id, r := range q.running {
		if r.State == jobs.Running && all[id] == r {
			if r.Batch != "" {
				perBatch[r.Batch]++
			}
			continue
		}
		delete(q.running, id)
		if r.State == jobs.Pending && all[id] == r {
			q.add(r)
		}
	}
	// A parked batch may have room again (next parks it again if not).
	for _, l := range q.parked {
		if l.at < 0 && len(l.jobs) > 0 && q.lanes[l.batch] == l {
			heap.Push(&q.open, l)
		}
	}
	q.parked = q.parked[:0]
	return len(q.running), perBatch
}

// next takes the first job that may start now, given how many jobs of
// each batch run; nil when none may. A batch at its concurrency is
// parked, stale jobs are dropped.
func (q *pendingQueue) next(all map[string]*record, perBatch map[string]int) *record {
	for len(q.open) > 0 {
		l := q.open[0]
		r := l.jobs[0]
		switch {
		case r.State != jobs.Pending || all[r.ID] != r:
			heap.Pop(&l.jobs)
			delete(q.queued, r)
		case r.Batch != "" && r.Concurrency > 0 && perBatch[r.Batch] >= r.Concurrency:
			q.parked = append(q.parked, heap.Pop(&q.open).(*lane))
			continue
		default:
			heap.Pop(&l.jobs)
			delete(q.queued, r)
			q.settle(l)
			return r
		}
		q.settle(l)
	}
	return nil
}

// settle puts the lane back in order after its first job changed, or
// takes it out of the open heap (and forgets it) when it is empty.
func (q *pendingQueue) settle(l *lane) {
	if len(l.jobs) > 0 {
		heap.Fix(&q.open, l.at)
		return
	}
	heap.Remove(&q.open, l.at)
	delete(q.lanes, l.batch)
}

// recordHeap is a heap of jobs in pendingBefore order.
type recordHeap []*record

func (h recordHeap) Len() int           { return len(h) }
func (h recordHeap) Less(i, j int) bool { return pendingBefore(h[i], h[j]) }
func (h recordHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *recordHeap) Push(x any)        { *h = append(*h, x.(*record)) }
func (h *recordHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return r
}

// laneHeap is a heap of non-empty lanes ordered by their first job.
type laneHeap []*lane

func (h laneHeap) Len() int           { return len(h) }
func (h laneHeap) Less(i, j int) bool { return pendingBefore(h[i].jobs[0], h[j].jobs[0]) }
func (h laneHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].at, h[j].at = i, j
}
func (h *laneHeap) Push(x any) {
	l := x.(*lane)
	l.at = len(*h)
	*h = append(*h, l)
}
func (h *laneHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	l.at = -1
	*h = old[:len(old)-1]
	return l
}

// dispatch starts the next jobs of the queue with start while fewer than
// max of all run and each batch stays within its concurrency. A job start
// refuses and leaves pending (a shutdown) waits for the next call.
func (q *pendingQueue) dispatch(all map[string]*record, max int, start func(*record) bool) {
	if !q.built {
		q.rebuild(all)
	}
	running, perBatch := q.refresh(all)
	var again []*record
	for running < max {
		r := q.next(all, perBatch)
		if r == nil {
			break
		}
		if !start(r) {
			if r.State == jobs.Pending {
				again = append(again, r) // not now (shutdown); not in this pass
			}
			continue
		}
		q.running[r.ID] = r
		running++
		if r.Batch != "" {
			perBatch[r.Batch]++
		}
	}
	for _, r := range again {
		q.add(r)
	}
}
