/* cohort-authority: see au_main() (authority/au_cli.c). */
int au_main(int argc, char **argv);

int main(int argc, char **argv)
{
    return au_main(argc, argv);
}
