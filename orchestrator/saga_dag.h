/*
 * saga_dag — the order of a saga type's steps: which steps each one waits
 * for, as bit sets over step indices (SAGA_MAX_STEPS fits in 64 bits).
 *
 * A step waits for the steps its `after` list names (step_def.after); a step
 * without the list waits for the step before it in the file, so a file
 * without any `after` is the straight line it always was. Pure functions of
 * the definition: the loader uses them to refuse cycles and inputs that are
 * not guaranteed to exist, the state machine to start every step whose
 * dependencies are done and to compensate in reverse dependency order.
 *
 * Invariant (ensured by the loader, relied on by the state machine): the
 * graph is acyclic. On a cyclic graph these functions still terminate.
 */
#ifndef SAGA_SAGA_DAG_H
#define SAGA_SAGA_DAG_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define SAGA_DAG_BIT(i) (1ull << (i))

/* The steps step waits for directly. */
uint64_t saga_dag_deps(const saga_def *def, size_t step);
/* Every step that must be done before step starts (the transitive closure). */
uint64_t saga_dag_ancestors(const saga_def *def, size_t step);
/* Every step that waits, directly or not, for step. */
uint64_t saga_dag_descendants(const saga_def *def, size_t step);
/* -1 when the graph is acyclic, else the index of a step on a cycle. */
int saga_dag_find_cycle(const saga_def *def);

#endif
