/* placeholder until the runtime lands */
#include "participant.h"
