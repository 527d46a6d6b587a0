/* Placeholder until the authority's commands land. */
#include <stdio.h>
int au_main(int argc, char **argv);
int au_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fputs("cohort-authority: not built yet\n", stderr);
    return 1;
}
