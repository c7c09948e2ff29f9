/*
 * crashpoint — named places where a test can make a process die abruptly.
 *
 * Off by default. A test sets SAGA_CRASH_POINT=NAME (or NAME:N to die at the
 * Nth hit) in the environment of the process it starts; when execution
 * reaches crashpoint("NAME") that many times, the process is killed with
 * SIGKILL on the spot: no atexit handlers, no flushing, exactly like a
 * power cut for everything not yet fsync'ed. Names in use are listed where
 * they are hit; grep for crashpoint(" to find them all.
 */
#ifndef SAGA_CRASHPOINT_H
#define SAGA_CRASHPOINT_H

/* Reads SAGA_CRASH_POINT once; call before any thread starts. */
void crashpoint_init(void);
/* Dies here if this is the armed point and its hit count is reached. */
void crashpoint(const char *name);

#endif
