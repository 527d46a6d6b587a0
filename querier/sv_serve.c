/* Placeholder until the service shell lands. */
int sv_serve_main(int argc, char **argv);
int sv_serve_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return 1;
}
