/* SPDX-License-Identifier: MIT */
/* Signal watchers: one signalfd per loop, holding every signal the loop
 * watches, read through the ring by one internal op.  The read keeps no
 * loop alive (like an unref'd libuv handle), but the cancel that ends it
 * after the last watcher stopped does, until its CQE: the kernel may write
 * the siginfo buffer until then. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "loop_int.h"

struct iou_signal {
	struct iou__list link;  /* in sigs->watchers */
	struct iou__sigs *sigs;
	int signo;
	bool stopped;           /* during a delivery: freed when it ends */
	bool fresh;             /* started during a delivery: not for it */
	iou_signal_cb cb;
	void *ud;
};

struct iou__sigs {
	iou_loop *loop;
	int fd;
	sigset_t mask;              /* signals with a watcher on this loop */
	unsigned count[_NSIG];      /* watchers per signal */
	unsigned n;                 /* watchers not stopped */
	struct iou__list watchers;
	struct iou__op op;
	bool reading;               /* the read is the kernel's until its CQE */
	bool cancelling;            /* its cancel is counted in loop->active */
	bool delivering;
	struct signalfd_siginfo info[8];
};

/* Watchers per signal on this thread (every loop of it), and the signals
 * that start blocked here because nobody else had: only those are
 * unblocked again when their last watcher stops. */
static _Thread_local unsigned thread_count[_NSIG];
static _Thread_local sigset_t thread_blocked;

static void thread_watch(int signo)
{
	sigset_t one, old;

	if (thread_count[signo]++)
		return;
	sigemptyset(&one);
	sigaddset(&one, signo);
	pthread_sigmask(SIG_BLOCK, &one, &old);
	if (!sigismember(&old, signo))
		sigaddset(&thread_blocked, signo);
}

static void thread_unwatch(int signo)
{
	sigset_t one;

	if (--thread_count[signo] || !sigismember(&thread_blocked, signo))
		return;
	sigdelset(&thread_blocked, signo);
	sigemptyset(&one);
	sigaddset(&one, signo);
	pthread_sigmask(SIG_UNBLOCK, &one, NULL);
}

static void read_complete(struct iou__op *op, const struct iou__cqe_rec *cqe);

static int read_arm(struct iou__sigs *sg)
{
	if (iou__be_read(sg->loop, &sg->op, sg->fd, sg->info,
			 sizeof(sg->info)) < 0)
		return -EAGAIN;
	sg->reading = true;
	return 0;
}

/* No watcher left and nothing in flight. */
static void sigs_free(struct iou__sigs *sg)
{
	sg->loop->sigs = NULL;
	close(sg->fd);
	free(sg);
}

static void deliver(struct iou__sigs *sg, size_t n)
{
	struct iou__list *l, *next;

	sg->delivering = true;
	for (size_t i = 0; i < n; i++) {
		int signo = (int)sg->info[i].ssi_signo;

		for (l = sg->watchers.next; l != &sg->watchers; l = l->next) {
			iou_signal *w = IOU__CONTAINER_OF(l, iou_signal, link);

			if (w->signo == signo && !w->stopped && !w->fresh)
				w->cb(w, signo, w->ud);
		}
	}
	sg->delivering = false;
	for (l = sg->watchers.next; l != &sg->watchers; l = next) {
		iou_signal *w = IOU__CONTAINER_OF(l, iou_signal, link);

		next = l->next;
		w->fresh = false;
		if (w->stopped) {
			iou__list_del(&w->link);
			free(w);
		}
	}
}

static void read_complete(struct iou__op *op, const struct iou__cqe_rec *cqe)
{
	struct iou__sigs *sg = IOU__CONTAINER_OF(op, struct iou__sigs, op);

	sg->reading = false;
	if (sg->cancelling) {
		sg->cancelling = false;
		iou__op_done(sg->loop);
	}
	if (cqe->res > 0)
		deliver(sg, (size_t)cqe->res / sizeof(sg->info[0]));
	if (!sg->n) {
		sigs_free(sg);
		return;
	}
	/* Anything else would fail again at once: rather deaf than spinning.
	 * (A failed re-arm is retried by the next iou_signal_start().)  A
	 * watcher started by a callback above may have armed it already: a
	 * second read on the same op would outlive the watchers' state. */
	if (!sg->reading &&
	    (cqe->res > 0 || cqe->res == -ECANCELED || cqe->res == -EINTR ||
	     cqe->res == -EAGAIN))
		read_arm(sg);
}

static void unwatch(iou_signal *w)
{
	struct iou__sigs *sg = w->sigs;

	w->stopped = true;
	sg->n--;
	if (!--sg->count[w->signo]) {
		sigdelset(&sg->mask, w->signo);
		signalfd(sg->fd, &sg->mask, 0);
	}
	thread_unwatch(w->signo);
	if (!sg->delivering) {
		iou__list_del(&w->link);
		free(w);
	}
	if (sg->n || sg->delivering)
		return;
	if (!sg->reading) {
		sigs_free(sg);
	} else if (!sg->cancelling) {
		/* If no SQE can be had for the cancel, the read still ends
		 * with the next signal; counted until then all the same. */
		iou__cancel_op(sg->loop, &sg->op, sg->fd);
		sg->cancelling = true;
		iou__op_submitted(sg->loop);
	}
}

int iou_signal_start(iou_loop *loop, int signo, iou_signal_cb cb, void *ud,
		     iou_signal **out)
{
	struct iou__sigs *sg;
	iou_signal *w;
	sigset_t mask;
	int ret;

	if (!loop || !cb || !out || signo <= 0 || signo >= _NSIG ||
	    signo == SIGKILL || signo == SIGSTOP)
		return -EINVAL;
	sigemptyset(&mask);
	if (sigaddset(&mask, signo) < 0)
		return -EINVAL; /* one that the C library keeps for itself */
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	sg = loop->sigs;
	if (!sg) {
		sg = calloc(1, sizeof(*sg));
		if (!sg) {
			free(w);
			return -ENOMEM;
		}
		/* Blocking, so that io_uring waits for a signal itself. */
		sg->fd = signalfd(-1, &mask, SFD_CLOEXEC);
		if (sg->fd < 0) {
			ret = -errno;
			free(sg);
			free(w);
			return ret;
		}
		sg->loop = loop;
		sg->mask = mask;
		sg->op.complete = read_complete;
		iou__list_init(&sg->watchers);
		loop->sigs = sg;
	} else if (!sg->count[signo]) {
		mask = sg->mask;
		sigaddset(&mask, signo);
		if (signalfd(sg->fd, &mask, 0) < 0) {
			free(w);
			return -errno;
		}
		sg->mask = mask;
	}
	w->sigs = sg;
	w->signo = signo;
	w->cb = cb;
	w->ud = ud;
	w->fresh = sg->delivering;
	iou__list_add_tail(&sg->watchers, &w->link);
	sg->count[signo]++;
	sg->n++;
	thread_watch(signo);
	if (!sg->reading) {
		ret = read_arm(sg);
		if (ret < 0) {
			unwatch(w);
			return ret;
		}
	}
	*out = w;
	return 0;
}

int iou_signal_stop(iou_signal *sig)
{
	if (!sig || sig->stopped)
		return -EINVAL;
	unwatch(sig);
	return 0;
}
