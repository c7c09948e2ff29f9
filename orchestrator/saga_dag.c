/*
 * saga_dag — dependency sets of a saga type's steps; see saga_dag.h.
 */
#include "saga_dag.h"

uint64_t saga_dag_deps(const saga_def *def, size_t step)
{
    const step_def *sd = &def->steps[step];
    if (!sd->has_after)
        return step > 0 ? SAGA_DAG_BIT(step - 1) : 0;
    uint64_t deps = 0;
    for (size_t k = 0; k < sd->n_after; k++)
        deps |= SAGA_DAG_BIT(sd->after[k]);
    return deps;
}

uint64_t saga_dag_ancestors(const saga_def *def, size_t step)
{
    uint64_t seen = saga_dag_deps(def, step), grew;
    /* Widen until nothing is added: at most n_steps rounds, cycles included. */
    do {
        grew = 0;
        for (size_t j = 0; j < def->n_steps; j++) {
            if (!(seen & SAGA_DAG_BIT(j)))
                continue;
            uint64_t more = saga_dag_deps(def, j) & ~seen;
            seen |= more;
            grew |= more;
        }
    } while (grew != 0);
    return seen;
}

uint64_t saga_dag_descendants(const saga_def *def, size_t step)
{
    uint64_t out = 0;
    for (size_t j = 0; j < def->n_steps; j++)
        if (j != step && (saga_dag_ancestors(def, j) & SAGA_DAG_BIT(step)))
            out |= SAGA_DAG_BIT(j);
    return out;
}

int saga_dag_find_cycle(const saga_def *def)
{
    for (size_t i = 0; i < def->n_steps; i++)
        if (saga_dag_ancestors(def, i) & SAGA_DAG_BIT(i))
            return (int)i;
    return -1;
}
