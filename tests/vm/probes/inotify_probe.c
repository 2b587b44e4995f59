/*
 * An inotify watcher as a dev server has one: it watches the directories it
 * is given and each directory created in them, and prints one line per event:
 *
 *   <unix time, s.ns> <directory> <name> <KIND[,ISDIR]> <cookie>
 *
 * then flushes, so `docker logs` shows it at once. "ready" once watching.
 * Built static (musl-gcc) by tests/vm/host_integration.rs.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#define MASK (IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO)
#define MAX_WATCHES 64

static char dirs[MAX_WATCHES][PATH_MAX];

static int watch(int fd, const char *dir) {
	int wd = inotify_add_watch(fd, dir, MASK);
	if (wd < 0 || wd >= MAX_WATCHES) {
		perror(dir);
		return -1;
	}
	snprintf(dirs[wd], PATH_MAX, "%s", dir);
	return 0;
}

static const char *kind(unsigned mask) {
	if (mask & IN_CREATE) return "CREATE";
	if (mask & IN_MODIFY) return "MODIFY";
	if (mask & IN_CLOSE_WRITE) return "CLOSE_WRITE";
	if (mask & IN_DELETE) return "DELETE";
	if (mask & IN_MOVED_FROM) return "MOVED_FROM";
	if (mask & IN_MOVED_TO) return "MOVED_TO";
	return "OTHER";
}

int main(int argc, char **argv) {
	int fd = inotify_init1(0);
	if (fd < 0) {
		perror("inotify_init1");
		return 1;
	}
	for (int i = 1; i < argc; i++)
		if (watch(fd, argv[i]))
			return 1;
	printf("ready\n");
	fflush(stdout);
	char buf[65536] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n <= 0) {
			perror("read");
			return 1;
		}
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *e = (struct inotify_event *)p;
			p += sizeof *e + e->len;
			if (e->wd < 0 || e->wd >= MAX_WATCHES || !e->len)
				continue;
			printf("%lld.%09ld %s %s %s%s %u\n", (long long)now.tv_sec, now.tv_nsec, dirs[e->wd], e->name,
			       kind(e->mask), (e->mask & IN_ISDIR) ? ",ISDIR" : "", e->cookie);
			if ((e->mask & IN_CREATE) && (e->mask & IN_ISDIR)) {
				char path[PATH_MAX];
				snprintf(path, sizeof path, "%s/%s", dirs[e->wd], e->name);
				watch(fd, path);
			}
		}
		fflush(stdout);
	}
}
